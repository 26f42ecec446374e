"""Outages in the middle of a saga: a half-finished undo is recorded, retried, and completed later.

Also the one crash the idempotency key must survive: claimed, then the process died before
ReservaSolicitada was appended. A repeat starts the saga itself instead of waiting forever.
"""

from __future__ import annotations

import asyncio

import grpc
from conftest import CANCELADA, CONFIRMADA, FALLIDA, World

from reservas import faults
from reservas.domain import Solicitud
from reservas.leases import LeaseStore
from reservas.service import fingerprint


async def test_a_key_claimed_by_a_process_that_died_before_the_first_event_is_not_wedged(stack: World) -> None:
    usuario, evento = await stack.usuario(), await stack.evento()
    request = stack.request(usuario, evento.id, cantidad=2, key="claimed-then-crashed")
    solicitud = Solicitud(usuario, evento.id, 2, (), "tok_visa", "claimed-then-crashed")
    # The claim is one insert that also takes the lease: the dead process's lease must expire first.
    dead = LeaseStore(stack.db("reservas"), "dead-process", ttl_seconds=1)
    assert await dead.claim(usuario, request.idempotency_key, fingerprint(solicitud), "orphan-1") == ("orphan-1", True)

    reserva = await stack.reservar(request)
    assert (reserva.id, reserva.estado, reserva.version) == ("orphan-1", CONFIRMADA, 10)


async def test_usuarios_down_mid_saga_and_mid_cancel_settles_once_it_is_back(stack: World) -> None:
    evento = await stack.evento(aforo=5)
    comprador, otro = await stack.usuarios_n(2)
    confirmada = await stack.reservar(stack.request(comprador, evento.id, cantidad=2))

    # A purchase is paid and about to be confirmed when usuarios goes down: RegistrarCompra, then AnularCompra, fail.
    with faults.holding("ConfirmadorReserva", "before") as hold:
        paid = asyncio.ensure_future(stack.reservar(stack.request(otro, evento.id, key="paid")))
        await asyncio.wait_for(hold.reached.wait(), 30)
        await stack.usuarios_app.stop(grace=0)
        hold.release()
        failure = await stack.fails(paid)
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAVAILABLE, "DEPENDENCY_UNAVAILABLE")
    pendiente = failure.metadata["reserva_id"]
    tipos = await stack.tipos(pendiente)
    assert "CompensacionReintentada" in tipos and "ReservaFallida" not in tipos
    assert {"PagoReembolsado", "EntradasLiberadas"} <= set(tipos)  # the other undos were not held up

    cancel = await stack.fails(stack.cancelar(confirmada.id))
    assert (cancel.code, cancel.reason) == (grpc.StatusCode.UNAVAILABLE, "CANCELLATION_PENDING")
    assert cancel.metadata["reserva_id"] == confirmada.id
    await stack.check(allow_pending=True)

    await stack.restart_usuarios()
    assert (await stack.wait_settled(pendiente)).estado == FALLIDA
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while (await stack.get(confirmada.id)).estado != CANCELADA:
        assert loop.time() < deadline, "the cancellation was not completed by recovery"
        await asyncio.sleep(0.1)
    assert await stack.historial_compras(comprador) == []
    assert (await stack.get_evento(evento.id)).entradas_disponibles == 5
    # The client's retry with the same key, now that usuarios is back, buys (a new attempt: the failed
    # one was fully undone); a repeat of it answers the same reservation.
    retried = await stack.reservar(stack.request(otro, evento.id, key="paid"))
    assert retried.estado == CONFIRMADA and retried.id != pendiente
    again = await stack.reservar(stack.request(otro, evento.id, key="paid"))
    assert again.id == retried.id
    assert (await stack.get(pendiente)).estado == FALLIDA
    assert await stack.historial_compras(otro) == [retried.id]


async def test_a_purchase_still_under_way_at_the_callers_deadline_is_answered_saga_in_progress(stack: World) -> None:
    """The answer comes before the caller's deadline, names the reservation, and the purchase goes on; so does a
    repeat of the key that waits for it (one saga, never a second)."""
    usuario, evento = await stack.usuario(), await stack.evento(aforo=5)
    request = stack.request(usuario, evento.id, key="slow")
    with faults.holding("ProcesadorPago", "before") as hold:
        first = await stack.fails(stack.reservar(request, timeout=1.5))
        assert (first.code, first.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "SAGA_IN_PROGRESS")
        repeat = await stack.fails(stack.reservar(request, timeout=1.5))
        assert (repeat.code, repeat.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "SAGA_IN_PROGRESS")
        assert repeat.metadata["reserva_id"] == first.metadata["reserva_id"] == hold.reserva_ids[0]
        hold.release()
    assert (await stack.wait_settled(first.metadata["reserva_id"])).estado == CONFIRMADA
    assert (await stack.reservar(request)).id == first.metadata["reserva_id"]
