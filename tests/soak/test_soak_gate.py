"""Soak: flash sales through the admission gate (make soak).

1. 2,000 buyers race for 200 tickets, 64 at a time: exactly 200 reservations are recorded (all
   CONFIRMADA) and the other 1,800 buyers are answered SOLD_OUT by the gate, with nothing recorded.
2. A 20,000-ticket event sells out: 2,100 buyers of 10 tickets each (EVENTFLOW_SOAK_SELLOUT scales it),
   64 at a time; the last 100 are answered SOLD_OUT by the gate.
After each: every reservation settles, what buyers were told matches what is stored, and the four
DESIGN.md invariants hold. Purchases per second are printed.
"""

from __future__ import annotations

import asyncio
import os
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

CONCURRENCY = 64
SELLOUT = int(os.environ.get("EVENTFLOW_SOAK_SELLOUT", "20000"))


async def flash_sale(world: World, buyers: list[str], evento_id: str, cantidad: int) -> tuple[Tally, float]:
    """Every buyer tries once, CONCURRENCY at a time; what they were told, and how long it took."""
    tally = Tally()
    queue = iter(buyers)

    async def buyer() -> None:
        for usuario in queue:
            try:
                tally.ok(await world.reservar(world.request(usuario, evento_id, cantidad=cantidad), timeout=120))
            except grpc.aio.AioRpcError as error:
                tally.failed(error)

    started = time.perf_counter()
    await asyncio.gather(*(buyer() for _ in range(CONCURRENCY)))
    return tally, time.perf_counter() - started


async def stack_with_gate(world: World, start_app: Callable[[Awaitable[GrpcApp]], Awaitable[str]]) -> None:
    world.reservas_address = await start_app(create_reservas(world.reservas_config()))
    world.reservas = world.connect(world.reservas_address)


async def settled_and_checked(world: World, tally: Tally) -> list:  # type: ignore[type-arg]
    await wait_all_settled(world, timeout=180)
    report = await world.check()
    tally.check_against(report)
    one_purchase_per_key(report)
    return list(report.reservas.values())


@pytest.mark.soak
@pytest.mark.timeout(1800)
async def test_two_thousand_buyers_for_two_hundred_tickets(
    world: World, start_app: Callable[[Awaitable[GrpcApp]], Awaitable[str]]
) -> None:
    await stack_with_gate(world, start_app)
    evento = await world.evento(aforo=200)
    buyers = await create_usuarios(world, 2000)
    tally, elapsed = await flash_sale(world, buyers, evento.id, cantidad=1)
    print(f"\n2,000 buyers for 200 tickets answered in {elapsed:.1f}s ({2000 / elapsed:.0f}/s): {dict(tally.outcomes)}")
    stored = await settled_and_checked(world, tally)
    assert len(tally.confirmed) == 200 and tally.gate_refusals == 1800, dict(tally.outcomes)
    assert len(stored) == 200 and all(r.estado is Estado.CONFIRMADA for r in stored)  # the gate let no more in
    assert (await world.get_evento(evento.id)).entradas_disponibles == 0


@pytest.mark.soak
@pytest.mark.timeout(3600)
async def test_a_twenty_thousand_ticket_event_sells_out(
    world: World, start_app: Callable[[Awaitable[GrpcApp]], Awaitable[str]]
) -> None:
    await stack_with_gate(world, start_app)
    evento = await world.evento(aforo=SELLOUT)
    purchases = SELLOUT // 10
    buyers = await create_usuarios(world, purchases + 100)
    tally, elapsed = await flash_sale(world, buyers, evento.id, cantidad=10)
    print(f"\n{len(buyers)} buyers of 10 tickets for {SELLOUT} answered in {elapsed:.1f}s "
          f"({len(buyers) / elapsed:.0f}/s; first and last reservations of one event alike): {dict(tally.outcomes)}")  # fmt: skip
    stored = await settled_and_checked(world, tally)
    sold = sum(r.cantidad for r in stored if r.estado is Estado.CONFIRMADA)
    assert sold == SELLOUT and len(tally.confirmed) == purchases, dict(tally.outcomes)
    assert tally.gate_refusals == 100, dict(tally.outcomes)
    assert (await world.get_evento(evento.id)).entradas_disponibles == 0
