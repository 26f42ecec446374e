"""The MongoDB command budget of a purchase, counted: a change that adds round trips fails here.

Every command the three services send for one Reservar is counted with pymongo's command
monitoring (the services run in this process, each on its own database, so a command's database
says whose it is). Background work is switched off so the count is exact and repeatable: the
read-model projector runs elsewhere (EVENTFLOW_PROJECTOR=off), recovery waits an hour between
rounds, and so does the admission gate's re-read of the event (one GetEvento per event every
EVENTFLOW_GATE_REFRESH_SECONDS, shared by all the answers of that period). What a purchase costs at load, background included, is printed by `make bench`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import pytest
from conftest import CONFIRMADA, World
from pymongo import monitoring

#: DESIGN.md's budget for one confirmed purchase, summed over usuarios, eventos and reservas.
PURCHASE_BUDGET = 12
#: Handshakes and health checks are connection upkeep, not the purchase's work.
UPKEEP = frozenset({"hello", "isMaster", "ismaster", "ping", "endSessions", "getMore", "saslStart", "saslContinue"})


@dataclass
class CommandCounter(monitoring.CommandListener):
    databases: set[str] = field(default_factory=set)
    seen: list[tuple[str, str, str]] = field(default_factory=list)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        # A transaction's commit or abort is sent to `admin`: it counts (only the services write meanwhile).
        ours = event.database_name in self.databases or (
            self.databases and event.command_name in ("commitTransaction", "abortTransaction")
        )
        if ours and event.command_name not in UPKEEP:
            target = event.command.get(event.command_name)
            self.seen.append((event.database_name.rsplit("_", 1)[-1], event.command_name, str(target)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def table(self) -> str:
        rows = sorted(Counter(self.seen).items())
        return "\n".join(f"  {n} x {service}.{command} {target}" for (service, command, target), n in rows)


COUNTER = CommandCounter()
monitoring.register(COUNTER)  # applies to the clients created after this (every test's services)


@pytest.fixture
async def quiet(world: World, start_app) -> World:  # type: ignore[no-untyped-def]
    from reservas.server import create_app as create_reservas

    config = world.reservas_config(projector="off", recovery_interval_seconds=3600.0, gate_refresh_seconds=3600.0)
    world.reservas_address = await start_app(create_reservas(config))
    world.reservas = world.connect(world.reservas_address)
    return world


async def count(world: World, call) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    await asyncio.sleep(0.5)  # let the start-up round of recovery finish
    COUNTER.databases = set(world.dbs.values())
    COUNTER.seen = []
    try:
        await call()
    finally:
        COUNTER.databases = set()
    return COUNTER.seen


@pytest.mark.parametrize("max_por_usuario", [0, 3], ids=["no limit", "limit per buyer"])
async def test_a_confirmed_purchase_stays_within_the_command_budget(quiet: World, max_por_usuario: int) -> None:
    """Also for an event with max_por_usuario: the take's own transaction checks it (the buyer's count is one
    more write in its one `update` of inventario), so a limited event costs no command more."""
    usuario, evento = await quiet.usuario(), await quiet.evento(aforo=10, max_por_usuario=max_por_usuario)
    warm_up = await quiet.reservar(quiet.request(usuario, evento.id))  # connections and indexes in place
    assert warm_up.estado == CONFIRMADA

    reply: list[object] = []

    async def buy() -> None:
        reply.append(await quiet.reservar(quiet.request(usuario, evento.id)))

    seen = await count(quiet, buy)
    limit = f" (max_por_usuario {max_por_usuario})" if max_por_usuario else ""
    print(f"\nMongoDB commands of one confirmed purchase{limit}: {len(seen)}\n{COUNTER.table()}")
    assert reply[0].estado == CONFIRMADA  # type: ignore[attr-defined]
    assert len(seen) <= PURCHASE_BUDGET, COUNTER.table()


async def test_a_sold_out_answer_costs_no_database_command(quiet: World) -> None:
    usuario, evento = await quiet.usuario(), await quiet.evento(aforo=2)
    assert (await quiet.reservar(quiet.request(usuario, evento.id, cantidad=2))).estado == CONFIRMADA

    failures: list[object] = []

    async def refused() -> None:
        for _ in range(20):
            failures.append(await quiet.fails(quiet.reservar(quiet.request(usuario, evento.id))))

    seen = await count(quiet, refused)
    print(f"\nMongoDB commands of 20 SOLD_OUT answers: {len(seen)}\n{COUNTER.table()}")
    assert {f.reason for f in failures} == {"SOLD_OUT"}  # type: ignore[attr-defined]
    assert seen == []
