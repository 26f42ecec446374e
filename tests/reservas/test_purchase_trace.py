"""One purchase is one trace across the three real services (issue 10 §2), read from the SDK's in-memory exporter.

The servers run in this process, so the test installs its own provider in infra.tracing for its duration
(not OpenTelemetry's global one): no other test is traced.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging

import grpc
import pytest
from conftest import CONFIRMADA, World
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, format_span_id, format_trace_id

from infra.logs import JsonFormatter

RESERVAR = "eventflow.reservas.v1.ReservasService/Reservar"
RESERVAR_ENTRADAS = "eventflow.eventos.v1.EventosService/ReservarEntradas"
LIBERAR_ENTRADAS = "eventflow.eventos.v1.EventosService/LiberarEntradas"
REGISTRAR_COMPRA = "eventflow.usuarios.v1.UsuariosService/RegistrarCompra"
STEPS = ["ValidadorDatos", "ValidadorInventario", "ProcesadorPago", "ConfirmadorReserva"]


class Trace:
    """The finished spans of one trace: the one whose root is the Reservar call."""

    def __init__(self, spans: tuple[ReadableSpan, ...]) -> None:
        roots = [s for s in spans if s.name == RESERVAR and s.kind is SpanKind.SERVER]
        assert len(roots) == 1, [s.name for s in spans]
        self.root = roots[0]
        self.trace_id = self.root.context.trace_id
        self.spans = [s for s in spans if s.context.trace_id == self.trace_id]
        self.by_id = {s.context.span_id: s for s in self.spans}

    def named(self, name: str, kind: SpanKind = SpanKind.INTERNAL) -> list[ReadableSpan]:
        return sorted((s for s in self.spans if s.name == name and s.kind is kind), key=lambda s: s.start_time or 0)

    def one(self, name: str, kind: SpanKind = SpanKind.INTERNAL) -> ReadableSpan:
        found = self.named(name, kind)
        assert len(found) == 1, f"{len(found)} {kind.name} spans named {name!r} in {self.names()}"
        return found[0]

    def parent(self, span: ReadableSpan) -> ReadableSpan:
        assert span.parent is not None, f"{span.name} has no parent"
        assert span.parent.trace_id == self.trace_id
        return self.by_id[span.parent.span_id]

    def ancestors(self, span: ReadableSpan) -> list[str]:
        names = []
        while span.parent is not None:
            span = self.parent(span)
            names.append(span.name)
        return names

    def names(self) -> list[str]:
        return [s.name for s in sorted(self.spans, key=lambda s: s.start_time or 0)]

    def remote_call(self, method: str) -> tuple[ReadableSpan, ReadableSpan]:
        """The callee's SERVER span of `method` and reservas' CLIENT span it is the child of."""
        server = self.one(method, SpanKind.SERVER)
        client = self.parent(server)
        assert (client.name, client.kind) == (method, SpanKind.CLIENT)
        assert server.attributes is not None and client.attributes is not None
        service, name = method.split("/")
        for span in (server, client):
            assert span.attributes is not None
            assert (span.attributes["rpc.system"], span.attributes["rpc.service"]) == ("grpc", service)
            assert span.attributes["rpc.method"] == name
        return server, client


async def finished_trace(exporter: InMemorySpanExporter, timeout: float = 5.0) -> Trace:
    """The purchase's trace once its root has ended: the server span of Reservar ends after the answer is on its
    way, so the caller may hold the answer a moment before the span is finished."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not any(s.name == RESERVAR and s.kind is SpanKind.SERVER for s in exporter.get_finished_spans()):
        if loop.time() > deadline:
            break  # Trace() names what was there
        await asyncio.sleep(0.01)
    return Trace(exporter.get_finished_spans())


async def test_a_purchase_is_one_trace_across_the_three_services(
    stack: World, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    usuario = await stack.usuario()
    evento = await stack.evento(aforo=5)
    caplog.set_level(logging.INFO, logger="reservas")
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter("test"))
    logging.getLogger().addHandler(handler)
    exporter.clear()
    try:
        reserva = await stack.reservar(stack.request(usuario, evento.id))
    finally:
        logging.getLogger().removeHandler(handler)
    assert reserva.estado == CONFIRMADA

    purchase = await finished_trace(exporter)
    assert purchase.root.parent is None  # the caller sent no trace context: the purchase starts here
    assert purchase.root.attributes is not None and purchase.root.attributes["rpc.grpc.status_code"] == 0
    assert purchase.root.status.status_code is StatusCode.UNSET
    # One span per saga step, in order, inside the Reservar call.
    steps = [purchase.one(name) for name in STEPS]
    assert [s.start_time for s in steps] == sorted(s.start_time for s in steps)
    for step in steps:
        assert RESERVAR in purchase.ancestors(step), step.name
        assert step.attributes is not None and step.attributes["eventflow.reserva_id"] == reserva.id
    # usuarios' and eventos' server spans are children of reservas' client spans, made by the step that calls.
    entradas, call = purchase.remote_call(RESERVAR_ENTRADAS)
    assert purchase.parent(call).name == "ValidadorInventario"
    compra, call = purchase.remote_call(REGISTRAR_COMPRA)
    assert purchase.parent(call).name == "ConfirmadorReserva"
    assert entradas.attributes is not None and entradas.attributes["rpc.grpc.status_code"] == 0
    # Nothing failed, nothing was undone.
    assert not [s.name for s in purchase.spans if s.status.status_code is StatusCode.ERROR]
    assert not [s.name for s in purchase.spans if s.name.startswith("compensate ")]
    assert not purchase.named(LIBERAR_ENTRADAS, SpanKind.SERVER)

    # The saga's log lines carry the purchase's trace and the span of the step they were written in.
    trace_id, step_ids = format_trace_id(purchase.trace_id), {format_span_id(s.context.span_id) for s in steps}
    saga_lines = [
        entry for entry in map(json.loads, lines.getvalue().splitlines())
        if entry.get("reserva_id") == reserva.id and entry["msg"] == "saga event"
    ]  # fmt: skip
    assert saga_lines
    assert {entry["trace_id"] for entry in saga_lines} == {trace_id}
    assert {entry["span_id"] for entry in saga_lines} & step_ids


async def test_a_failed_purchase_traces_its_compensations(stack: World, exporter: InMemorySpanExporter) -> None:
    usuario = await stack.usuario()
    evento = await stack.evento(aforo=5)
    exporter.clear()
    failure = await stack.fails(stack.reservar(stack.request(usuario, evento.id, medio_pago="tok_declined")))
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PAYMENT_DECLINED")

    purchase = await finished_trace(exporter)
    # The answer: the caller's FAILED_PRECONDITION, with the reason; not an error of reservas (gRPC conventions).
    attributes = purchase.root.attributes
    assert attributes is not None
    assert attributes["rpc.grpc.status_code"] == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert (attributes["error.type"], attributes["eventflow.error.reason"]) == ("FAILED_PRECONDITION", "PAYMENT_DECLINED")
    # The step that failed is the error, with its reason; the one after it never ran.
    pago = purchase.one("ProcesadorPago")
    assert pago.status.status_code is StatusCode.ERROR
    assert pago.attributes is not None and pago.attributes["error.type"] == "PAYMENT_DECLINED"
    assert not purchase.named("ConfirmadorReserva")
    # The tickets were given back: a compensation span, with eventos' LiberarEntradas as its grandchild.
    undo = purchase.one("compensate ValidadorInventario")
    assert undo.status.status_code is StatusCode.UNSET
    assert RESERVAR in purchase.ancestors(undo)
    liberar, call = purchase.remote_call(LIBERAR_ENTRADAS)
    assert purchase.parent(call) is undo
    assert liberar.attributes is not None and liberar.attributes["rpc.grpc.status_code"] == 0
    assert undo.start_time is not None and pago.end_time is not None and undo.start_time >= pago.end_time
    # Nothing was sent to usuarios' history.
    assert not purchase.named(REGISTRAR_COMPRA, SpanKind.SERVER)
