"""Soak: thousands of buyers race for the last tickets and seats, with every payment token and cancellations.

3000 buyers (EVENTFLOW_SOAK_BUYERS; none starts after EVENTFLOW_SOAK_MINUTES, 20) at 50 at a time:
about 60% for the last 50 tickets of an unseated event, the rest for the 30 seats of a seated one
(1 or 2 seats each, drawn at random), paying with a mix of tok_visa, tok_declined, tok_timeout and
tok_slow (small configured delays); some confirmed purchases are cancelled at once, giving their
tickets back to later buyers. Then every reservation must settle (within the hold TTL plus a
margin), what buyers were told must match what is stored, and the four DESIGN.md invariants must
hold. The seed is printed (EVENTFLOW_SOAK_SEED replays a run).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable

import grpc
import pytest

from infra.server import GrpcApp
from reservas.domain import Estado
from reservas.server import create_app as create_reservas
from tests.reservas.conftest import World
from tests.reservas.invariants import one_purchase_per_key
from tests.soak.support import Tally, create_usuarios, wait_all_settled

BUYERS = int(os.environ.get("EVENTFLOW_SOAK_BUYERS", "3000"))
#: No buyer starts after this many minutes (EVENTFLOW_SOAK_MINUTES): the run is bounded in time as well as
#: in count, on a slow or shared machine it checks fewer purchases rather than running for an hour.
BUDGET = float(os.environ.get("EVENTFLOW_SOAK_MINUTES", "20")) * 60
CONCURRENCY = 50
TICKETS = 50
SEATS = [f"{row}-{n}" for row in "ABC" for n in range(1, 11)]
TOKENS = ["tok_visa"] * 7 + ["tok_declined", "tok_timeout", "tok_slow"]
MAX_CANCELLATIONS = 15
HOLD_TTL = 60.0  # seconds: no reservation may stay PENDIENTE longer than this plus a margin
SETTLE_MARGIN = 120.0


@pytest.mark.soak
@pytest.mark.timeout(BUDGET + 900)
async def test_thousands_race_for_the_last_tickets_and_seats(
    world: World, start_app: Callable[[Awaitable[GrpcApp]], Awaitable[str]]
) -> None:
    seed = int(os.environ.get("EVENTFLOW_SOAK_SEED", str(random.randrange(10**6))))
    rng = random.Random(seed)
    print(f"\nseed {seed}: {BUYERS} buyers, {CONCURRENCY} at a time")
    config = world.reservas_config(hold_ttl_seconds=HOLD_TTL, payment_slow_seconds=0.3, payment_timeout_seconds=0.2)
    world.reservas_address = await start_app(create_reservas(config))
    world.reservas = world.connect(world.reservas_address)
    general = await world.evento(aforo=TICKETS)
    platea = await world.evento(asientos=SEATS)
    usuarios = await create_usuarios(world, BUYERS)

    requests = []
    for usuario in usuarios:
        token = rng.choice(TOKENS)
        if rng.random() < 0.6:
            requests.append(world.request(usuario, general.id, cantidad=rng.choice((1, 1, 2)), medio_pago=token))
        else:
            asientos = rng.sample(SEATS, rng.choice((1, 1, 2)))
            requests.append(
                world.request(usuario, platea.id, cantidad=len(asientos), asientos=asientos, medio_pago=token)
            )

    tally = Tally()
    queue = iter(requests)
    sent = 0
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + BUDGET

    async def buyer() -> None:
        nonlocal sent
        for request in queue:
            if loop.time() > stop_at:
                return
            sent += 1
            try:
                reserva = await world.reservar(request, timeout=60)
            except grpc.aio.AioRpcError as error:
                tally.failed(error)
                continue
            tally.ok(reserva)
            if len(tally.cancelled) < MAX_CANCELLATIONS and rng.random() < 0.15:
                await tally.cancel(world, reserva.id)

    async def progress() -> None:
        while True:
            await asyncio.sleep(60)
            print(f"  {time.perf_counter() - started:.0f}s: {sent} sent, {tally.outcomes.total()} answers", flush=True)

    started = time.perf_counter()
    reporter = asyncio.create_task(progress())
    await asyncio.gather(*(buyer() for _ in range(CONCURRENCY)))
    reporter.cancel()
    elapsed = time.perf_counter() - started
    waited = await wait_all_settled(world, timeout=HOLD_TTL + SETTLE_MARGIN)
    budget = "" if sent == BUYERS else f" (the {BUDGET / 60:.0f}-minute budget stopped it: {BUYERS - sent} never sent)"
    print(f"{sent} buyers answered in {elapsed:.0f}s ({sent / elapsed:.1f}/s){budget}, settled {waited:.0f}s later")
    print(f"answers: {dict(tally.outcomes.most_common())}; cancelled {len(tally.cancelled)}")

    report = await world.check()
    tally.check_against(report)
    one_purchase_per_key(report)
    stored = list(report.reservas.values())
    # Every request sent started exactly one saga, except those the client gave up on before reservas
    # even answered (DEADLINE_EXCEEDED with no ErrorInfo), which may never have started one, and those
    # the admission gate answered SOLD_OUT (nothing is recorded for them).
    unanswered = tally.outcomes["DEADLINE_EXCEEDED/-"]
    assert sent - unanswered - tally.gate_refusals <= len(stored) <= sent - tally.gate_refusals, (
        sent, unanswered, tally.gate_refusals, len(stored)
    )
    for r in stored:
        if r.medio_pago in ("tok_declined", "tok_timeout"):
            assert r.estado is Estado.FALLIDA, (r.id, r.medio_pago, r.estado)
    sold = {
        evento.id: sum(r.cantidad for r in stored if r.evento_id == evento.id and r.estado is Estado.CONFIRMADA)
        for evento in (general, platea)
    }
    left = {evento.id: (await world.get_evento(evento.id)).entradas_disponibles for evento in (general, platea)}
    print(f"general: {sold[general.id]} sold, {left[general.id]} left of {TICKETS}; "
          f"platea: {sold[platea.id]} seats sold, {left[platea.id]} left of {len(SEATS)}")  # fmt: skip
    assert sold[general.id] + left[general.id] == TICKETS
    assert sold[platea.id] + left[platea.id] == len(SEATS)
    assert report.count(Estado.CANCELADA) == len(tally.cancelled)
