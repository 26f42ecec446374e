"""ListReservas and GetEstadisticasEvento through gRPC, after real purchases and cancellations made
with Reservar / CancelarReserva: the read side agrees with what the saga did."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import grpc

from conftest import CANCELADA, CONFIRMADA, FALLIDA, PRECIO, World
from eventflow.reservas.v1 import reservas_pb2
from reservas.projections.projector import ProjectorTask
from reservas.server import create_app


def _now() -> datetime:
    return datetime.now(UTC)


async def _list(world: World, **fields: object) -> reservas_pb2.ListReservasResponse:
    return await world.stub.ListReservas(reservas_pb2.ListReservasRequest(**fields), timeout=10)  # type: ignore[arg-type]


async def _current(world: World, since: datetime, timeout: float = 20.0) -> None:
    """Wait until the answers say the read model reflects everything up to `since`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        reply = await _list(world, page_size=1)
        if reply.HasField("actualizado_hasta") and reply.actualizado_hasta.ToDatetime(tzinfo=UTC) >= since:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"the read model did not catch up with {since} within {timeout}s")
        await asyncio.sleep(0.05)


async def test_lists_and_statistics_agree_with_what_the_saga_did(stack: World) -> None:
    u1, u2 = await stack.usuarios_n(2)
    evento = await stack.evento(aforo=10)
    kept = await stack.reservar(stack.request(u1, evento.id, cantidad=2))
    declined = await stack.fails(stack.reservar(stack.request(u2, evento.id, medio_pago="tok_declined")))
    assert declined.reason == "PAYMENT_DECLINED"
    returned = await stack.reservar(stack.request(u1, evento.id, cantidad=3))
    await stack.cancelar(returned.id)
    await _current(stack, _now())

    stats = await stack.stub.GetEstadisticasEvento(
        reservas_pb2.GetEstadisticasEventoRequest(evento_id=evento.id), timeout=10
    )
    assert (stats.solicitadas, stats.confirmadas, stats.fallidas, stats.canceladas) == (3, 2, 1, 1)
    assert (stats.entradas_vendidas, stats.recaudado) == (2, 2 * PRECIO)
    assert abs(stats.tasa_conversion - 2 / 3) < 1e-9
    assert stats.evento_id == evento.id and stats.HasField("actualizado_hasta")

    mine = await _list(stack, usuario_id=u1)
    assert [r.id for r in mine.reservas] == [returned.id, kept.id]  # newest first
    for listed in mine.reservas:  # the read model answers what the event stream says
        assert listed == await stack.get(listed.id)
    assert [r.estado for r in mine.reservas] == [CANCELADA, CONFIRMADA]
    failed = await _list(stack, evento_id=evento.id, estado=FALLIDA)
    assert [r.usuario_id for r in failed.reservas] == [u2]

    paged, token = [], ""
    while True:
        page = await _list(stack, evento_id=evento.id, page_size=1, page_token=token)
        assert len(page.reservas) <= 1
        paged += [r.id for r in page.reservas]
        token = page.next_page_token
        if not token:
            break
    everything = await _list(stack, evento_id=evento.id)
    assert paged == [r.id for r in everything.reservas] and len(set(paged)) == 3


async def test_bad_read_requests_are_invalid_argument(stack: World) -> None:
    u1 = await stack.usuario()
    evento = await stack.evento(aforo=5)
    for _ in range(2):
        await stack.reservar(stack.request(u1, evento.id))
    await _current(stack, _now())
    page = await _list(stack, usuario_id=u1, page_size=1)
    cases = [
        (reservas_pb2.ListReservasRequest(page_size=-1), "VALIDATION_FAILED", "page_size"),
        (reservas_pb2.ListReservasRequest(usuario_id=u1, page_token=page.next_page_token + "x"), "INVALID_PAGE_TOKEN", "page_token"),
        (reservas_pb2.ListReservasRequest(usuario_id="otro", page_token=page.next_page_token), "INVALID_PAGE_TOKEN", "page_token"),
        (reservas_pb2.ListReservasRequest(estado=99), "VALIDATION_FAILED", "estado"),  # type: ignore[arg-type]
    ]
    for request, reason, field in cases:
        failure = await stack.fails(stack.stub.ListReservas(request, timeout=10))
        assert (failure.code, failure.reason, failure.metadata.get("field")) == (
            grpc.StatusCode.INVALID_ARGUMENT, reason, field
        ), request  # fmt: skip
    failure = await stack.fails(
        stack.stub.GetEstadisticasEvento(reservas_pb2.GetEstadisticasEventoRequest(evento_id=""), timeout=10)
    )
    assert (failure.code, failure.metadata.get("field")) == (grpc.StatusCode.INVALID_ARGUMENT, "evento_id")
    nothing = await stack.stub.GetEstadisticasEvento(
        reservas_pb2.GetEstadisticasEventoRequest(evento_id="no-reservations"), timeout=10
    )
    assert (nothing.solicitadas, nothing.tasa_conversion) == (0, 0.0)


async def test_with_the_projector_off_the_lists_wait_for_a_separate_projector(world: World) -> None:
    world.reservas_address = await world.start_app(create_app(world.reservas_config(projector="off")))
    world.reservas = world.connect(world.reservas_address)
    u1 = await world.usuario()
    evento = await world.evento(aforo=5)
    bought = await world.reservar(world.request(u1, evento.id))
    # Nobody projects in this process: no projector task runs, and the purchase is in no list.
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("projector") and not t.done()]
    assert not (await _list(world, usuario_id=u1)).reservas
    task = ProjectorTask(world.db("reservas")).start()  # what `eventflow projector` runs
    try:
        await _current(world, _now())
        assert [r.id for r in (await _list(world, usuario_id=u1)).reservas] == [bought.id]
    finally:
        await task.stop()

