"""Two reservas replicas behind gRPC's client-side round_robin: a race for the last tickets while one dies.

2,000 purchases race for 200 tickets across two `python -m reservas` processes; one is killed with -9 in the
middle. Callers do what a real client does: a call that fails with UNAVAILABLE is sent again with the same
idempotency key (round_robin takes it to the survivor). Every reservation settles (the survivor finishes the
dead replica's sagas once their lease expires), the tickets of purchases the crash cost come back and are sold
to buyers who keep trying, so exactly 200 are sold in the end, and the invariants hold.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import uuid
from pathlib import Path

import grpc
from conftest import CONFIRMADA, PENDIENTE, World
from test_saga_crash import processes, start_reservas  # noqa: F401 - processes is a fixture

from callers import ADMIN
from eventflow.reservas.v1 import reservas_pb2, reservas_pb2_grpc
from infra import procs
from infra.auth import BearerAuth

BUYERS, TICKETS, IN_FLIGHT = 2000, 200, 200


async def test_two_replicas_sell_exactly_the_tickets_while_one_is_killed(
    world: World, processes: list[procs.ManagedProcess], tmp_path: Path  # noqa: F811
) -> None:
    evento = await world.evento(aforo=TICKETS)
    usuarios = await world.usuarios_n(100)
    first, first_address = await start_reservas(world, processes, tmp_path, "replica-1")
    second, second_address = await start_reservas(world, processes, tmp_path, "replica-2")
    # What the README tells a Python client to do: every replica's address, round_robin across them.
    target = f"ipv4:{first_address},{second_address}"
    channel = grpc.aio.insecure_channel(target, options=[("grpc.lb_policy_name", "round_robin")],
                                        interceptors=[BearerAuth(ADMIN)])  # fmt: skip
    world.channels.append(channel)
    stub = reservas_pb2_grpc.ReservasServiceStub(channel)

    answered: collections.Counter[str] = collections.Counter()
    outcomes: dict[str, reservas_pb2.Reserva | str] = {}
    half = asyncio.Event()
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def buy(n: int) -> None:
        request = world.request(usuarios[n % len(usuarios)], evento.id, key=f"race-{n}-{uuid.uuid4().hex[:6]}")
        async with slots:
            for _attempt in range(20):
                try:
                    outcomes[request.idempotency_key] = await stub.Reservar(request, timeout=60)
                    answered["answer"] += 1
                    break
                except grpc.aio.AioRpcError as error:
                    code = error.code()
                    answered[code.name] += 1
                    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), error.details()
                    if code != grpc.StatusCode.UNAVAILABLE:
                        outcomes[request.idempotency_key] = code.name
                        break
                    await asyncio.sleep(0.2)  # the same key again: round_robin sends it to the survivor
                finally:
                    if sum(answered.values()) >= BUYERS // 3:
                        half.set()

    async def kill_one() -> None:
        await half.wait()
        first.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]

    await asyncio.gather(kill_one(), *(buy(n) for n in range(BUYERS)))
    assert not first.running and second.running

    # Every purchase got an answer: a reservation, or a refusal (SOLD_OUT before anything was recorded).
    assert len(outcomes) == BUYERS, answered
    refused = collections.Counter(v for v in outcomes.values() if isinstance(v, str))
    assert set(refused) <= {"FAILED_PRECONDITION"}, refused

    # The survivor settles what the dead replica left in flight (its lease expires after 2 s).
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    survivor = world.connect(second_address)
    reservas = [r for r in outcomes.values() if not isinstance(r, str)]
    while True:
        states = []
        for reserva in reservas:
            current = await survivor.GetReserva(reservas_pb2.GetReservaRequest(id=reserva.id), timeout=10)
            states.append(current.estado)
        if PENDIENTE not in states or loop.time() > deadline:
            break
        await asyncio.sleep(0.5)
    assert PENDIENTE not in states, collections.Counter(states)
    sold = states.count(CONFIRMADA)
    assert sold <= TICKETS, collections.Counter(states)

    # Purchases the crash cost gave their tickets back (recovery undid them): buyers who keep trying get them.
    # No ticket is lost with the dead replica, and none is sold twice.
    left = (await world.get_evento(evento.id)).entradas_disponibles
    assert left == TICKETS - sold
    for n in range(left):
        late = await stub.Reservar(world.request(usuarios[n % len(usuarios)], evento.id), timeout=60)
        assert late.estado == CONFIRMADA
    assert (await world.get_evento(evento.id)).entradas_disponibles == 0
    sold_out = await world.fails(stub.Reservar(world.request(usuarios[0], evento.id), timeout=60))
    assert sold_out.reason == "SOLD_OUT"
    report = await world.check()  # the four invariants: nothing oversold, nobody charged without a purchase
    assert report is not None
