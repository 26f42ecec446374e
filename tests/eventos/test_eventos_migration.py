"""Events stored by an earlier version (c6109af: the inventory inside the event document) are migrated at startup.

The old documents are written as c6109af wrote them, then a real eventos server starts on them: before it
reports SERVING it has moved each one's seats, seat map, allocations and tombstones into `inventario`. Every
scenario is checked through the RPCs: the events answer, the tickets of an old allocation are given back
once, an old tombstone cannot take, new purchases work, and the inventory invariant holds. The earlier runs
vary: none, a complete one (so the server's is the second), one that crashed before the events were
rewritten, one that crashed half-way through the inventory, two replicas at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient, monitoring

from eventflow.eventos.v1 import eventos_pb2
from eventos.config import Config
from eventos.repository import INVENTORY, SEAT_BATCH, EventoRepository
from eventos.server import create_app

PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
SEATS = ["A-1", "A-2", "A-3", "B-1", "B-2"]
OLD_FIELDS = ("asientos", "asientos_disponibles", "reservas", "reservas_liberadas")


def old_evento(
    *,
    aforo: int = 0,
    asientos: list[str] | None = None,
    reservas: Sequence[tuple[str, int, list[str]]] = (),
    liberadas: Sequence[str] = (),
    disponibles: list[str] | None = None,
) -> dict[str, Any]:
    """An event document as c6109af's EventoRepository stored it (see `git show c6109af:eventos/repository.py`)."""
    asientos = asientos or []
    aforo = len(asientos) if asientos else aforo
    return {
        "_id": str(ObjectId()),
        "nombre": "Concierto de antes",
        "fecha": datetime(2027, 3, 14, 21, 0, tzinfo=UTC),
        "lugar": "Antel Arena",
        "aforo_total": aforo,
        "entradas_disponibles": aforo - sum(cantidad for _, cantidad, _ in reservas),
        "precio": 250_000,
        "moneda": "UYU",
        "asientos": asientos,
        "asientos_disponibles": disponibles if disponibles is not None else asientos,
        "reservas": [{"reserva_id": rid, "cantidad": cantidad, "asientos": seats} for rid, cantidad, seats in reservas],
        "reservas_liberadas": list(liberadas),
    }


@dataclass
class Old:
    """The old events written before the server started: unseated with sales, seated with sales, untouched."""

    plain: dict[str, Any] = field(
        default_factory=lambda: old_evento(aforo=10, reservas=[("r1", 2, []), ("r2", 3, [])], liberadas=["t1", "t2"])
    )
    seated: dict[str, Any] = field(
        default_factory=lambda: old_evento(
            asientos=SEATS,
            reservas=[("r3", 2, ["A-1", "B-1"]), ("r4", 1, ["A-3"])],
            liberadas=["t3"],
            disponibles=["B-2", "A-2"],  # c6109af pushed given-back seats at the end: any order
        )
    )
    untouched: dict[str, Any] = field(default_factory=lambda: old_evento(aforo=4))

    @property
    def all(self) -> list[dict[str, Any]]:
        return [self.plain, self.seated, self.untouched]


async def no_earlier_run(repository: EventoRepository, old: Old, uri: str) -> None:
    pass


async def complete(repository: EventoRepository, old: Old, uri: str) -> None:
    assert await repository.migrate_legacy() == len(old.all)  # so the server's run is the second


async def crashed_before_rewriting(repository: EventoRepository, old: Old, uri: str) -> None:
    for doc in old.all:
        await repository._copy_legacy_inventory(doc)  # and the process died: no event was rewritten


async def crashed_half_way(repository: EventoRepository, old: Old, uri: str) -> None:
    await crashed_before_rewriting(repository, old, uri)
    inventory = repository._inventory
    ids = sorted([doc["_id"] async for doc in inventory.find({}, {"_id": 1})])
    await inventory.delete_many({"_id": {"$in": ids[::2]}})  # only some of its inserts had landed


async def two_replicas(repository: EventoRepository, old: Old, uri: str) -> None:
    other_client: AsyncMongoClient = AsyncMongoClient(uri, tz_aware=True)
    try:
        other = EventoRepository(other_client[repository._writes.database.name])
        migrated = await asyncio.gather(repository.migrate_legacy(), other.migrate_legacy())
        assert sum(migrated) == len(old.all)  # each event rewritten by exactly one of them
    finally:
        await other_client.close()


EARLIER_RUNS: dict[str, Callable[[EventoRepository, Old, str], Awaitable[None]]] = {
    "none": no_earlier_run,
    "complete": complete,
    "crashed before rewriting the events": crashed_before_rewriting,
    "crashed half-way through the inventory": crashed_half_way,
    "two replicas at once": two_replicas,
}


@pytest.fixture(params=list(EARLIER_RUNS))
async def old(request: pytest.FixtureRequest, mongo_uri: str, eventos_config: Config) -> AsyncIterator[Old]:
    """The old events in the server's database (and whatever the earlier run of the migration left)."""
    client: AsyncMongoClient = AsyncMongoClient(mongo_uri, tz_aware=True)
    database = client[eventos_config.mongodb_database]
    written = Old()
    await database["eventos"].insert_many([dict(doc) for doc in written.all])
    repository = EventoRepository(database)
    await repository.ensure_indexes()
    await EARLIER_RUNS[request.param](repository, written, mongo_uri)
    yield written
    await client.close()


@pytest.fixture
async def eventos_address(old: Old, start_app: Callable[..., Awaitable[str]], eventos_config: Config) -> str:
    """The server starts on the old documents (this module's override of the conftest fixture)."""
    return await start_app(create_app(eventos_config))


async def test_the_old_events_answer_as_stored(eventos, old: Old) -> None:
    plain = await eventos.check_invariant(old.plain["_id"])
    assert (plain.aforo_total, plain.entradas_disponibles, plain.inventario_version) == (10, 5, 0)
    assert (plain.nombre, list(plain.asientos), plain.con_asientos) == ("Concierto de antes", [], False)
    seated = await eventos.check_invariant(old.seated["_id"])
    assert list(seated.asientos) == SEATS and seated.con_asientos
    assert list(seated.asientos_disponibles) == ["A-2", "B-2"]  # in seat-map order
    assert seated.entradas_disponibles == 2
    untouched = await eventos.check_invariant(old.untouched["_id"])
    assert untouched.entradas_disponibles == 4
    listed = await eventos.stub.ListEventos(eventos_pb2.ListEventosRequest(page_size=10))
    assert {e.id for e in listed.eventos} == {doc["_id"] for doc in old.all}
    # Stored in the current shape only, and a further run finds nothing to do.
    stored = eventos.repository._writes
    assert await stored.count_documents({"$or": [{f: {"$exists": True}} for f in OLD_FIELDS]}) == 0
    assert await eventos.repository.migrate_legacy() == 0


async def test_an_old_allocation_gives_its_tickets_and_seats_back_once(eventos, old: Old) -> None:
    plain_id, seated_id = old.plain["_id"], old.seated["_id"]
    given = await eventos.liberar(plain_id, "r1")
    assert (given.cantidad, given.entradas_disponibles) == (2, 7)
    again = await eventos.liberar(plain_id, "r1")
    assert (again.cantidad, again.entradas_disponibles) == (2, 7)  # a repeat answers, gives nothing more
    assert (await eventos.check_invariant(plain_id)).entradas_disponibles == 7

    given = await eventos.liberar(seated_id, "r3")
    assert (given.cantidad, list(given.asientos), given.entradas_disponibles) == (2, ["A-1", "B-1"], 4)
    await eventos.liberar(seated_id, "r3")
    seated = await eventos.check_invariant(seated_id)
    assert list(seated.asientos_disponibles) == ["A-1", "A-2", "B-1", "B-2"] and seated.entradas_disponibles == 4
    # A cancellation of the reservation as a whole (every event it touched) gives back nothing twice.
    await eventos.fails(eventos.reservar(plain_id, "r1", 2), PRECONDITION, "RESERVA_RELEASED")


async def test_an_old_tombstone_cannot_take_and_an_old_allocation_is_an_idempotent_retry(eventos, old: Old) -> None:
    plain_id, seated_id = old.plain["_id"], old.seated["_id"]
    await eventos.fails(eventos.reservar(plain_id, "t1", 1), PRECONDITION, "RESERVA_RELEASED")
    await eventos.fails(eventos.reservar(seated_id, "t3", 1, ["A-2"]), PRECONDITION, "RESERVA_RELEASED")
    tombstone = await eventos.liberar(plain_id, "t2")
    assert (tombstone.cantidad, tombstone.entradas_disponibles) == (0, 5)
    retried = await eventos.reservar(plain_id, "r2", 3)  # a late retry of an old take: what it holds
    assert (retried.cantidad, retried.entradas_disponibles) == (3, 5)
    retried = await eventos.reservar(seated_id, "r4", 1, ["A-3"])
    assert (list(retried.asientos), retried.entradas_disponibles) == (["A-3"], 2)
    await eventos.check_invariant(plain_id)
    await eventos.check_invariant(seated_id)


async def test_new_purchases_and_changes_after_the_migration(eventos, old: Old) -> None:
    plain_id, seated_id, untouched_id = old.plain["_id"], old.seated["_id"], old.untouched["_id"]
    taken = await eventos.reservar(plain_id, "n1", 5)
    assert (taken.entradas_disponibles, taken.inventario_version) == (0, 1)
    await eventos.fails(eventos.reservar(plain_id, "n2", 1), PRECONDITION, "SOLD_OUT")
    await eventos.fails(eventos.reservar(seated_id, "n3", 1, ["A-3"]), PRECONDITION, "SEAT_TAKEN")  # r4 holds it
    taken = await eventos.reservar(seated_id, "n3", 2, ["B-2", "A-2"])
    assert taken.entradas_disponibles == 0
    for evento_id in (plain_id, seated_id):
        await eventos.check_invariant(evento_id)
    # The old event with no sales: bought from, given back, and deleted with its inventory.
    await eventos.reservar(untouched_id, "n4", 4)
    await eventos.liberar(untouched_id, "n4")
    await eventos.stub.DeleteEvento(eventos_pb2.DeleteEventoRequest(id=untouched_id))
    assert await eventos.repository._inventory.count_documents({"evento_id": untouched_id}) == 0


@dataclass
class Commands(monitoring.CommandListener):
    """The commands a client sends (name, body)."""

    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name not in {"endSessions", "hello", "isMaster", "ismaster", "killCursors"}:
            self.sent.append((event.command_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.mark.slow
async def test_a_big_seat_map_in_bounded_batches_and_nothing_to_do_is_one_indexed_query(
    mongo_uri: str, db_name: Callable[[str], str]
) -> None:
    commands = Commands()
    client: AsyncMongoClient = AsyncMongoClient(mongo_uri, tz_aware=True, event_listeners=[commands])
    database = client[db_name("eventos")]
    try:
        seats = [f"S-{i}" for i in range(50_000)]
        big = old_evento(
            asientos=seats,
            reservas=[(f"r{i}", 2, [seats[2 * i], seats[2 * i + 1]]) for i in range(1_000)],
            liberadas=[f"t{i}" for i in range(500)],
            disponibles=seats[2_000:],
        )
        await database["eventos"].insert_one(big)
        repository = EventoRepository(database)
        await repository.ensure_indexes()
        commands.sent.clear()
        assert await repository.migrate_legacy() == 1
        inserts = [body for name, body in commands.sent if name == "insert"]
        assert all(len(body["documents"]) <= SEAT_BATCH for body in inserts)
        assert sum(len(body["documents"]) for body in inserts) == 50_000 + 1 + 1_000 + 500
        evento = await repository.get(big["_id"])
        assert evento is not None and evento.entradas_disponibles == 48_000
        assert evento.asientos_disponibles == tuple(seats[2_000:])
        inventory = database[INVENTORY]
        assert await inventory.count_documents({"evento_id": big["_id"], "tipo": "asiento", "reserva_id": "r7"}) == 2

        # Migrated: a further run is one query, answered by the sparse index of old events.
        commands.sent.clear()
        assert await repository.migrate_legacy() == 0
        assert [name for name, _ in commands.sent] == ["find"]
        _, find = commands.sent[0]
        plan = await database.command("explain", {"find": "eventos", "filter": find["filter"]})
        assert "IXSCAN" in str(plan["queryPlanner"]["winningPlan"]) and "legacy_reservas" in str(plan)
    finally:
        await client.drop_database(database)
        await client.close()
