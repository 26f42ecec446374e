"""/metrics of a real reservas server: a purchase, a SOLD_OUT and a cancellation move the counters by exactly that.

The series are read the way Prometheus reads them: an HTTP GET of /metrics, parsed with prometheus_client's
own parser, before and after; the test compares the differences.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Awaitable, Callable

import grpc
from conftest import CANCELADA, CONFIRMADA, World
from prometheus_client.parser import text_string_to_metric_families

from eventflow.reservas.v1 import reservas_pb2, reservas_pb2_grpc
from infra.metrics import version
from infra.procs import free_port
from infra.server import GrpcApp
from reservas.server import create_app as create_reservas

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
RESERVAS = "eventflow.reservas.v1.ReservasService"
STEPS = ("ValidadorDatos", "ValidadorInventario", "ProcesadorPago", "ConfirmadorReserva")


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 - our own loopback server
        assert reply.status == 200
        return reply.read().decode()


async def scrape(address: str) -> Samples:
    text = await asyncio.to_thread(_get, f"http://{address}/metrics")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def rpc(method: str, code: str | None = None) -> dict[str, str]:
    labels = {"grpc_type": "unary", "grpc_service": RESERVAS, "grpc_method": method}
    return labels if code is None else {**labels, "grpc_code": code}


async def test_metrics_count_a_purchase_a_sold_out_and_a_cancellation_exactly(
    world: World, start_app: Callable[[Awaitable[GrpcApp]], Awaitable[str]]
) -> None:
    port = free_port()
    world.reservas_address = await start_app(create_reservas(world.reservas_config(metrics_port=port)))
    world.reservas = world.connect(world.reservas_address)
    address = f"127.0.0.1:{port}"
    usuario, otro = await world.usuarios_n(2)
    evento = await world.evento(aforo=1)
    before = await scrape(address)

    reserva = await world.reservar(world.request(usuario, evento.id))
    assert reserva.estado == CONFIRMADA
    sold_out = await world.fails(world.reservar(world.request(otro, evento.id)))
    assert (sold_out.code, sold_out.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SOLD_OUT")
    assert (await world.cancelar(reserva.id)).estado == CANCELADA
    async with grpc.aio.insecure_channel(world.reservas_address) as anonymous:  # no token: refused by auth
        stub = reservas_pb2_grpc.ReservasServiceStub(anonymous)
        refused = await world.fails(stub.GetReserva(reservas_pb2.GetReservaRequest(id=reserva.id), timeout=10))
    assert refused.code == grpc.StatusCode.UNAUTHENTICATED
    events = len(await world.tipos(reserva.id))  # GetHistorialReserva: counted too, read below

    after = await scrape(address)
    # The read models catch up asynchronously: wait until the projector has applied the purchase's events.
    for _ in range(100):
        if value(after, "eventflow_projector_events_applied_total") - value(
            before, "eventflow_projector_events_applied_total"
        ) >= events:
            break
        await asyncio.sleep(0.1)
        after = await scrape(address)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # Purchases, by outcome and reason: one confirmed, one sold out; no repeat.
    assert delta("eventflow_reservas_purchases_total", outcome="CONFIRMADA", reason="") == 1
    assert delta("eventflow_reservas_purchases_total", outcome="FALLIDA", reason="SOLD_OUT") == 1
    assert sum(v for (n, _), v in after.items() if n == "eventflow_reservas_purchases_total") - sum(
        v for (n, _), v in before.items() if n == "eventflow_reservas_purchases_total"
    ) == 2
    assert delta("eventflow_reservas_idempotent_repeats_total") == 0
    # The gate admitted one and answered the other SOLD_OUT itself.
    assert delta("eventflow_reservas_gate_admissions_total", outcome="ADMITTED") == 1
    assert delta("eventflow_reservas_gate_admissions_total", outcome="SOLD_OUT") == 1
    # Each step ran once; the cancellation undid three of them, none needed a retry.
    for step in STEPS:
        assert delta("eventflow_reservas_saga_step_seconds_count", step=step) == 1, step
    for step in ("ProcesadorPago", "ValidadorInventario", "ConfirmadorReserva"):
        assert delta("eventflow_reservas_compensations_total", step=step) == 1, step
    assert not [k for k in after if k[0] == "eventflow_reservas_compensation_retries_total" and after[k]]
    assert value(after, "eventflow_reservas_sagas_open") == 0
    # The ticket is back: eventos' last report to the gate.
    assert value(after, "eventflow_reservas_tickets_left", evento_id=evento.id) == 1

    # Per RPC, with the status code the caller got (authentication's refusal included).
    assert delta("grpc_server_started_total", **rpc("Reservar")) == 2
    assert delta("grpc_server_handled_total", **rpc("Reservar", "OK")) == 1
    assert delta("grpc_server_handled_total", **rpc("Reservar", "FAILED_PRECONDITION")) == 1
    assert delta("grpc_server_handled_total", **rpc("CancelarReserva", "OK")) == 1
    assert delta("grpc_server_handled_total", **rpc("GetReserva", "UNAUTHENTICATED")) == 1
    assert delta("grpc_server_handling_seconds_count", **rpc("Reservar")) == 2
    assert delta("grpc_server_handling_seconds_count", **rpc("CancelarReserva")) == 1

    # The projector applied exactly the reservation's events; nothing was dead-lettered.
    assert delta("eventflow_projector_events_applied_total") == events
    assert delta("eventflow_projector_dead_letters_total") == 0
    assert ("eventflow_projector_lag_seconds", frozenset()) in after
    # The process and Python collectors, and what runs (`eventflow status` reads both).
    assert value(after, "process_resident_memory_bytes") > 0
    assert any(name == "python_info" for name, _ in after)
    assert value(after, "process_start_time_seconds") > 0
    assert value(after, "eventflow_build_info", service="reservas", version=version()) == 1

    # A purchase in flight (a slow payment: its step takes 0.5 s or more) is an open saga that ages.
    another = await world.evento(aforo=5)
    slow = asyncio.create_task(world.reservar(world.request(otro, another.id, medio_pago="tok_slow")))
    during = await scrape(address)
    for _ in range(100):
        if value(during, "eventflow_reservas_oldest_saga_seconds") >= 0.2:
            break
        await asyncio.sleep(0.02)
        during = await scrape(address)
    assert not slow.done(), "the slow purchase ended before it was seen open"
    assert value(during, "eventflow_reservas_sagas_open") == 1
    assert 0.2 <= value(during, "eventflow_reservas_oldest_saga_seconds") < 30
    await asyncio.gather(slow, return_exceptions=True)  # paid or timed out: either way, settled
    settled = await scrape(address)
    assert value(settled, "eventflow_reservas_sagas_open") == 0
    assert value(settled, "eventflow_reservas_oldest_saga_seconds") == 0
