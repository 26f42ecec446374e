"""infra.tracing: off unless the OTEL_* variables ask, the console exporter's lines, and trace ids in the logs.

The shape of a purchase's trace across the three services is in tests/reservas/test_purchase_trace.py.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_span_id, format_trace_id, get_current_span

from infra import tracing
from infra.logs import JsonFormatter
from infra.stack import Options, Stack, StackError


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, []),  # nothing said: off
        ({"OTEL_SERVICE_NAME": "x"}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, ["otlp"]),  # the standard default exporter
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_TRACES_EXPORTER": "otlp, Console"}, ["otlp", "console"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, []),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, []),
    ],
)
def test_tracing_is_off_unless_the_otel_variables_ask(env: dict[str, str], expected: list[str]) -> None:
    assert tracing.exporters(env) == expected


def test_an_unknown_exporter_is_named() -> None:
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER: unknown exporter 'jaeger'"):
        tracing.exporters({"OTEL_TRACES_EXPORTER": "jaeger"})
    with pytest.raises(StackError, match="unknown exporter 'zipkin'"):  # eventflow up says so before starting
        Stack(Options(), env={"OTEL_TRACES_EXPORTER": "zipkin"})


def format_line(message: str) -> dict[str, object]:
    record = logging.LogRecord("eventflow.test", logging.INFO, __file__, 1, message, (), None)
    return json.loads(JsonFormatter("test").format(record))


def test_a_log_line_carries_the_span_it_was_written_in(exporter: InMemorySpanExporter) -> None:
    outside = format_line("before")
    assert "trace_id" not in outside and "span_id" not in outside
    with tracing.span("work") as span:
        inside = format_line("during")
        context = span.get_span_context()
    assert (inside["trace_id"], inside["span_id"]) == (format_trace_id(context.trace_id), format_span_id(context.span_id))
    assert len(str(inside["trace_id"])) == 32 and len(str(inside["span_id"])) == 16
    assert "trace_id" not in format_line("after")
    assert [s.name for s in exporter.get_finished_spans()] == ["work"]


def test_off_nothing_is_made() -> None:
    assert not tracing.enabled()
    with tracing.span("work"):
        assert not get_current_span().get_span_context().is_valid
        assert "trace_id" not in format_line("during")
    with tracing.client_span("/s.S/M", [("authorization", "Bearer x")]) as metadata:
        assert metadata == [("authorization", "Bearer x")]  # no traceparent
    assert tracing.TracingInterceptor().wrap("/s.S/M", (), None) is None  # type: ignore[arg-type]


def test_a_failed_span_names_the_reason_not_the_message(exporter: InMemorySpanExporter) -> None:
    from infra.errors import FailedPrecondition  # noqa: PLC0415

    with pytest.raises(FailedPrecondition), tracing.span("ProcesadorPago"):
        raise FailedPrecondition("card of ana.perez@example.com declined", reason="PAYMENT_DECLINED")
    (span,) = exporter.get_finished_spans()
    assert span.status.description == "PAYMENT_DECLINED" and span.attributes == {"error.type": "PAYMENT_DECLINED"}
    assert not span.events  # no exception event: its message may name a person


def test_health_checks_are_not_traced(exporter: InMemorySpanExporter) -> None:
    interceptor = tracing.TracingInterceptor()
    assert interceptor.wrap("/grpc.health.v1.Health/Check", (), None) is None  # type: ignore[arg-type]
    assert interceptor.wrap("/eventflow.usuarios.v1.UsuariosService/GetUsuario", (), None) is not None  # type: ignore[arg-type]


def test_eventflow_up_trace_console_turns_it_on_for_every_service(tmp_path) -> None:  # noqa: ANN001
    stack = Stack(Options(data_dir=tmp_path, trace="console", reservas_replicas=2), env={})
    for name in ("usuarios", "eventos", "reservas"):
        assert stack.service_env(name)["OTEL_TRACES_EXPORTER"] == "console"
    assert any("grep eventflow.spans" in line for line in stack._trace_lines())
    assert "off" in Stack(Options(data_dir=tmp_path), env={})._trace_lines()[0]


def test_the_console_exporter_writes_each_span_as_a_json_log_line() -> None:
    """What a service started with OTEL_TRACES_EXPORTER=console writes (its own process: configure sets the
    global provider, which must not leak into this one)."""
    script = (
        "from infra import logs, tracing\n"
        "logs.configure('usuarios')\n"
        "assert tracing.configure('usuarios') is not None\n"
        "with tracing.span('outer'):\n"
        "    with tracing.client_span('/eventflow.eventos.v1.EventosService/GetEvento') as md:\n"
        "        assert [k for k, _ in md] == ['traceparent'], md\n"
    )
    env = {"OTEL_TRACES_EXPORTER": "console", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False)  # noqa: S603
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    spans = [line for line in lines if line["logger"] == "eventflow.spans"]
    assert [s["span"] for s in spans] == ["eventflow.eventos.v1.EventosService/GetEvento", "outer"]  # as they end
    client, outer = spans
    assert client["msg"].startswith("span eventflow.eventos.v1.EventosService/GetEvento ")
    assert client["service"] == "usuarios" and client["kind"] == "CLIENT"
    assert client["trace_id"] == outer["trace_id"] and client["parent_id"] == outer["span_id"]
    assert outer["parent_id"] is None
    assert client["attributes"]["rpc.method"] == "GetEvento"


def test_the_otlp_exporter_sends_the_spans_to_a_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTLP over gRPC, the default exporter, to a stand-in collector (the generated OTLP service, in a thread)."""
    from concurrent import futures  # noqa: PLC0415

    import grpc  # noqa: PLC0415
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc  # noqa: PLC0415
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415

    received: list[trace_service_pb2.ExportTraceServiceRequest] = []

    class Collector(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):  # noqa: ANN001, ANN202, N802 - the generated servicer's name
            received.append(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Collector(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    provider = TracerProvider(resource=Resource.create({"service.name": "reservas"}))
    provider.add_span_processor(SimpleSpanProcessor(tracing._otlp_exporter({})))
    tracing.install(provider)
    try:
        with tracing.span("ValidadorDatos"):
            pass
    finally:
        tracing.uninstall()
        provider.shutdown()
        server.stop(0)
    (request,) = received
    (resource_spans,) = request.resource_spans
    assert {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"] == "reservas"
    assert [s.name for scope in resource_spans.scope_spans for s in scope.spans] == ["ValidadorDatos"]
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        tracing._otlp_exporter({"OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"})
