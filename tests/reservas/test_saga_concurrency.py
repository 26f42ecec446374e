"""Racing buyers: exactly the capacity is sold, whatever the interleaving.

The durations are printed (pytest -s) for the record, never asserted: the machine is shared.
"""

from __future__ import annotations

import asyncio
import time

import grpc
from conftest import CONFIRMADA, World

from reservas.domain import Estado


async def _race(stack: World, requests: list) -> tuple[list, list, float]:
    started = time.perf_counter()
    answers = await asyncio.gather(*(stack.reservar(r, timeout=60) for r in requests), return_exceptions=True)
    elapsed = time.perf_counter() - started
    won = [a for a in answers if not isinstance(a, BaseException)]
    lost = [a for a in answers if isinstance(a, BaseException)]
    for error in lost:
        assert isinstance(error, grpc.aio.AioRpcError), error
    return won, lost, elapsed


async def test_100_buyers_for_20_tickets_sell_exactly_20(stack: World) -> None:
    evento = await stack.evento(aforo=20)
    usuarios = await stack.usuarios_n(100)
    won, lost, elapsed = await _race(stack, [stack.request(u, evento.id) for u in usuarios])
    print(f"\n100 buyers / 20 tickets: {elapsed:.2f}s, {len(won)} confirmed, {len(lost)} refused")
    assert len(won) == 20 and all(r.estado == CONFIRMADA for r in won)
    assert {e.code() for e in lost} == {grpc.StatusCode.FAILED_PRECONDITION}
    assert (await stack.get_evento(evento.id)).entradas_disponibles == 0
    report = await stack.check()
    assert report.count(Estado.CONFIRMADA) == 20


async def test_20_buyers_for_one_seat_sell_it_once(stack: World) -> None:
    evento = await stack.evento(asientos=["A-1", "A-2", "A-3"])
    usuarios = await stack.usuarios_n(20)
    won, lost, elapsed = await _race(stack, [stack.request(u, evento.id, asientos=["A-1"]) for u in usuarios])
    print(f"\n20 buyers / 1 seat: {elapsed:.2f}s, {len(won)} confirmed, {len(lost)} refused")
    assert len(won) == 1
    assert {e.code() for e in lost} == {grpc.StatusCode.FAILED_PRECONDITION}
    assert list((await stack.get_evento(evento.id)).asientos_disponibles) == ["A-2", "A-3"]
