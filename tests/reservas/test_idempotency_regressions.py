"""Regressions found in review: idempotent repeats through the admission gate, keys re-pointed after outages,
and a saga whose lease lapsed while another process undid it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
import redis.asyncio
from conftest import CONFIRMADA, FALLIDA, World

from reservas import faults
from reservas.gate import Admission, AdmissionGate, Outcome
from reservas.leases import LeaseStore
from reservas.server import create_app as create_reservas


# ---- the gate never answers SOLD_OUT to an idempotent repeat of a confirmed purchase ------------


async def test_repeat_of_a_confirmed_purchase_after_redis_lost_its_data_is_not_sold_out(stack: World) -> None:
    usuario, evento = await stack.usuario(), await stack.evento(aforo=1)
    request = stack.request(usuario, evento.id, cantidad=1, key="buy-last-ticket")
    first = await stack.reservar(request)
    assert first.estado == CONFIRMADA
    r = redis.asyncio.Redis.from_url(stack.redis_url)
    try:
        await r.delete(*[k async for k in r.scan_iter(match="gate:*")])  # Redis restarted without its data
    finally:
        await r.aclose()
    # The gate is seeded again mid-sale (sold out), without the key's marker: the client's retry of the
    # same request must still answer the same CONFIRMADA reservation, and a new buyer SOLD_OUT.
    again = await stack.reservar(request)
    assert again.id == first.id and again.estado == CONFIRMADA
    late = await stack.fails(stack.reservar(stack.request(usuario, evento.id, cantidad=1)))
    assert late.reason == "SOLD_OUT" and "reserva_id" not in late.metadata


async def test_repeat_of_a_purchase_admitted_while_the_gate_was_unavailable_is_not_sold_out(
    stack: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    usuario, evento = await stack.usuario(), await stack.evento(aforo=1)
    request = stack.request(usuario, evento.id, cantidad=1, key="bought-during-a-redis-blip")
    real_admit = AdmissionGate.admit

    async def unavailable(self: AdmissionGate, evento_id: str, *, reserva_id: str, **kw: object) -> Admission:
        return Admission(Outcome.UNAVAILABLE, reserva_id)  # a Redis blip, or MaxConnectionsError under load

    monkeypatch.setattr(AdmissionGate, "admit", unavailable)
    first = await stack.reservar(request)
    assert first.estado == CONFIRMADA
    monkeypatch.setattr(AdmissionGate, "admit", real_admit)
    again = await stack.reservar(request)
    assert again.id == first.id and again.estado == CONFIRMADA


# ---- a key re-pointed while the gate's marker names an older attempt ---------------------------


async def test_a_key_moved_back_to_an_attempt_that_gave_it_up_is_claimed_at_once(stack: World) -> None:
    leases = LeaseStore(stack.db("reservas"), "me")
    await leases.ensure_indexes()
    assert await leases.claim("u", "k", "h", "r1") == ("r1", True)
    assert await leases.repoint("u", "k", "r1", "h", "r2") == ("r2", True)
    # r2 failed (outage) too; the retry's admission names r1 (the gate's marker still says r1):
    claim = await asyncio.wait_for(leases.repoint("u", "k", "r2", "h", "r1"), 3)
    assert claim.won or claim.reserva_id in ("r1", "r2")
    assert await stack.db("reservas")["saga_leases"].count_documents({"clave": {"$exists": True}}) == 1


async def test_retry_after_two_outage_failures_and_a_gate_blip_buys(
    stack: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    usuario, evento = await stack.usuario(), await stack.evento(aforo=5)
    request = stack.request(usuario, evento.id, key="outage-retries")

    await stack.usuarios_app.stop(grace=0)  # 1st attempt (gate ADMITTED, marker r1) fails: UNAVAILABLE
    failure = await stack.fails(stack.reservar(request))
    assert failure.code == grpc.StatusCode.UNAVAILABLE
    r1 = failure.metadata["reserva_id"]
    assert (await stack.get(r1)).estado == FALLIDA

    real_admit = AdmissionGate.admit

    async def unavailable(self: AdmissionGate, evento_id: str, *, reserva_id: str, **kw: object) -> Admission:
        return Admission(Outcome.UNAVAILABLE, reserva_id)

    monkeypatch.setattr(AdmissionGate, "admit", unavailable)  # 2nd attempt during a Redis blip: key -> r2
    failure = await stack.fails(stack.reservar(request))
    assert failure.code == grpc.StatusCode.UNAVAILABLE
    r2 = failure.metadata["reserva_id"]
    assert r2 != r1 and (await stack.get(r2)).estado == FALLIDA
    monkeypatch.setattr(AdmissionGate, "admit", real_admit)

    await stack.restart_usuarios()
    # Then the client retries, as told, until it gets an answer about the purchase (reservas' channel to
    # usuarios may take a moment to reconnect): the gate's marker still names r1, MongoDB's key r2.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:
        try:
            reserva = await stack.reservar(request, timeout=8)
            break
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE and loop.time() < deadline, error
            await asyncio.sleep(0.3)
    assert reserva.estado == CONFIRMADA


# ---- a saga taken over by another process (its lease lapsed) and undone there ------------------



async def test_a_saga_whose_lease_lapsed_does_not_charge_or_record_after_recovery_undid_it(stack: World) -> None:
    stack.check_at_teardown = False  # checked below, with a clearer message
    # A: the process driving the purchase (its lease renewed only every 10 s).
    a_address = await stack.start_app(create_reservas(stack.reservas_config(lease_seconds=30.0)))
    a = stack.connect(a_address)
    # B: another replica; its recovery settles open sagas whose lease has lapsed.
    await stack.start_app(create_reservas(stack.reservas_config(recovery_interval_seconds=0.2)))

    usuario, evento = await stack.usuario(), await stack.evento(aforo=5)
    request = stack.request(usuario, evento.id, key="lapsed")
    with faults.holding("ProcesadorPago", "before") as hold:  # A has taken the tickets and is about to charge
        buying = asyncio.ensure_future(a.Reservar(request, timeout=30))
        await asyncio.wait_for(hold.reached.wait(), 30)
        [reserva_id] = hold.reserva_ids
        # A's lease lapses while A is alive (its renewal did not land in time: a pause, a stuck connection,
        # a partition from reservas' MongoDB). That is exactly what the lease is for: B takes over.
        leases = stack.db("reservas")["saga_leases"]
        await leases.update_one({"_id": reserva_id}, {"$set": {"expires": datetime.now(UTC) - timedelta(seconds=1)}})
        events = stack.db("reservas")["reserva_eventos"]
        deadline = asyncio.get_running_loop().time() + 10
        while not await events.find_one({"reserva_id": reserva_id, "tipo": "ReservaFallida"}):
            assert asyncio.get_running_loop().time() < deadline, "B did not settle the lapsed saga"
            await asyncio.sleep(0.05)
        hold.release()  # A charges now, behind B's back

    with pytest.raises(grpc.aio.AioRpcError) as told:
        await buying  # A's caller is told the purchase failed (SAGA_INTERRUPTED: "retry"), once A has stopped
    print("A's caller got:", told.value.code(), told.value.details())
    print("ledger:", await stack.ledger(reserva_id), "historial:", await stack.historial_compras(usuario))
    print("log:", await stack.tipos(reserva_id))
    # FALLIDA; the buyer must not be charged, and it must not be in the history.
    assert (await stack.get(reserva_id)).estado == FALLIDA
    assert await stack.ledger(reserva_id) == []  # A's late charge met B's void and was refused
    docs = [d async for d in stack.db("reservas")["pagos"].find({"reserva_id": reserva_id})]
    assert sum(d["monto"] if d["tipo"] == "CARGO" else -d["monto"] for d in docs) == 0  # nothing taken
    assert reserva_id not in await stack.historial_compras(usuario)
    await stack.check()
