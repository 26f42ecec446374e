"""max_por_usuario through the saga: one buyer's purchases of an event, together, never exceed it.

eventos checks the limit inside the take (ReservarEntradas names the buyer), so the race is
decided there; the saga compensates a refused purchase like any other (FALLIDA with the reason),
a cancellation gives the allowance back, and the admission gate is not fooled into SOLD_OUT.
"""

from __future__ import annotations

import asyncio

import grpc
import redis.asyncio
from conftest import CONFIRMADA, FALLIDA, Failure, World
from google.protobuf import field_mask_pb2

from eventflow.eventos.v1 import eventos_pb2
from infra.errors import error_info
from reservas.domain import Estado
from reservas.gate import AdmissionGate, GateState

LIMIT = "LIMIT_PER_BUYER_EXCEEDED"


async def set_limit(world: World, evento_id: str, max_por_usuario: int) -> None:
    evento = eventos_pb2.Evento(id=evento_id, max_por_usuario=max_por_usuario)
    mask = field_mask_pb2.FieldMask(paths=["max_por_usuario"])
    await world.eventos.UpdateEvento(eventos_pb2.UpdateEventoRequest(evento=evento, update_mask=mask), timeout=10)


def failure_of(error: BaseException) -> Failure:
    assert isinstance(error, grpc.aio.AioRpcError), error
    info = error_info(error)
    assert info is not None, error
    return Failure(error.code(), info.reason, dict(info.metadata), error.details() or "")


async def gate_state(world: World, evento_id: str) -> GateState | None:
    """What reservas' admission gate holds for the event (the servers' default key prefix)."""
    client = redis.asyncio.Redis.from_url(world.redis_url)
    try:
        return await AdmissionGate(client).state(evento_id)
    finally:
        await client.aclose()


async def bought(world: World, evento_id: str, usuario_id: str) -> int:
    """The tickets of the event that usuario_id holds in CONFIRMADA reservations, read from reservas."""
    report = await world.check()
    return sum(
        r.cantidad
        for r in report.reservas.values()
        if r.evento_id == evento_id and r.usuario_id == usuario_id and r.estado is Estado.CONFIRMADA
    )


async def test_twenty_concurrent_purchases_by_one_buyer_confirm_exactly_the_limit(stack: World) -> None:
    evento = await stack.evento(aforo=40, max_por_usuario=3)
    bot = await stack.usuario()
    answers = await asyncio.gather(
        *(stack.reservar(stack.request(bot, evento.id), timeout=60) for _ in range(20)), return_exceptions=True
    )
    won = [a for a in answers if not isinstance(a, BaseException)]
    lost = [failure_of(a) for a in answers if isinstance(a, BaseException)]
    assert len(won) == 3 and all(r.estado == CONFIRMADA for r in won)
    for failure in lost:
        assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, LIMIT), failure
        assert failure.metadata["max_por_usuario"] == "3" and int(failure.metadata["compradas"]) <= 3
        assert "at most 3 tickets" in failure.details
        failed = await stack.get(failure.metadata["reserva_id"])
        assert failed.estado == FALLIDA and "at most 3 tickets" in failed.motivo
        assert await stack.ledger(failed.id) == []  # refused before any charge
    assert (await stack.get_evento(evento.id)).entradas_disponibles == 37
    report = await stack.check()  # the invariants, the per-buyer count included
    assert report.count(Estado.CONFIRMADA) == 3 and report.count(Estado.FALLIDA) == 17
    assert len(await stack.historial_compras(bot)) == 3

    # A per-buyer refusal is not a sell-out: the gate holds eventos' count and nothing pending.
    state = await gate_state(stack, evento.id)
    assert state is not None and (state.disponibles, state.pending) == (37, {})
    other = await stack.usuario()
    assert (await stack.reservar(stack.request(other, evento.id, cantidad=3))).estado == CONFIRMADA


async def test_a_cancellation_gives_the_allowance_back(stack: World) -> None:
    evento = await stack.evento(aforo=10, max_por_usuario=3)
    ana = await stack.usuario()
    first = await stack.reservar(stack.request(ana, evento.id, cantidad=2))
    await stack.reservar(stack.request(ana, evento.id, cantidad=1))
    refused = await stack.fails(stack.reservar(stack.request(ana, evento.id, cantidad=1)))
    assert (refused.reason, refused.metadata["compradas"]) == (LIMIT, "3")
    await stack.cancelar(first.id)
    assert (await stack.reservar(stack.request(ana, evento.id, cantidad=2))).estado == CONFIRMADA
    assert (await stack.fails(stack.reservar(stack.request(ana, evento.id)))).reason == LIMIT
    assert await bought(stack, evento.id, ana) == 3


async def test_a_purchase_larger_than_the_limit_fails_and_takes_nothing(stack: World) -> None:
    evento = await stack.evento(aforo=10, max_por_usuario=2)
    ana = await stack.usuario()
    refused = await stack.fails(stack.reservar(stack.request(ana, evento.id, cantidad=3)))
    assert (refused.code, refused.reason) == (grpc.StatusCode.FAILED_PRECONDITION, LIMIT)
    assert refused.metadata["compradas"] == "0" and refused.metadata["solicitadas"] == "3"
    assert (await stack.get(refused.metadata["reserva_id"])).estado == FALLIDA
    assert (await stack.get_evento(evento.id)).entradas_disponibles == 10
    assert (await stack.reservar(stack.request(ana, evento.id, cantidad=2))).estado == CONFIRMADA


async def test_the_limit_can_change_and_counts_what_was_bought_before(stack: World) -> None:
    evento = await stack.evento(aforo=20)
    ana = await stack.usuario()
    await stack.reservar(stack.request(ana, evento.id, cantidad=4))
    await set_limit(stack, evento.id, 5)
    await stack.reservar(stack.request(ana, evento.id, cantidad=1))
    assert (await stack.fails(stack.reservar(stack.request(ana, evento.id)))).reason == LIMIT
    await set_limit(stack, evento.id, 3)  # below what ana holds: nothing is taken back, nothing more sold to her
    refused = await stack.fails(stack.reservar(stack.request(ana, evento.id)))
    assert (refused.reason, refused.metadata["compradas"], refused.metadata["max_por_usuario"]) == (LIMIT, "5", "3")
    await set_limit(stack, evento.id, 7)
    assert (await stack.reservar(stack.request(ana, evento.id, cantidad=2))).estado == CONFIRMADA
    assert await bought(stack, evento.id, ana) == 7


async def test_seated_event(stack: World) -> None:
    evento = await stack.evento(asientos=["A-1", "A-2", "A-3", "A-4"], max_por_usuario=2)
    ana = await stack.usuario()
    await stack.reservar(stack.request(ana, evento.id, cantidad=1, asientos=["A-1"]))
    refused = await stack.fails(stack.reservar(stack.request(ana, evento.id, cantidad=2, asientos=["A-2", "A-3"])))
    assert refused.reason == LIMIT
    assert list((await stack.get_evento(evento.id)).asientos_disponibles) == ["A-2", "A-3", "A-4"]
    await stack.reservar(stack.request(ana, evento.id, cantidad=1, asientos=["A-3"]))
