"""The cost of a take does not grow with the event: MongoDB commands counted, documents touched, latency printed.

The use cases run in-process on a client with pymongo command monitoring, so every command eventos
sends is seen. The command counts are deterministic and asserted (the purchase's budget is 12 commands
over three services; eventos' share is one GetEvento and four for the take); the latencies are printed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.errors import OperationFailure

from eventos import domain
from eventos.domain import EventoDraft, ReservaRequest
from eventos.repository import ALLOCATION, INVENTORY, EventoRepository, allocation_id
from eventos.service import EventoService
from eventos_support import service_of
from infra import procs
from infra.errors import FailedPrecondition

FECHA = datetime(2030, 3, 14, 21, 0, tzinfo=UTC)
#: What reservas' ValidadorDatos needs of an event: never its seats.
SAGA_FIELDS = ("id", "fecha", "precio", "moneda", "con_asientos")
#: Read the counters, update them (filtered on the version read), write the allocation and seats, commit.
TAKE = ["find", "update", "update", "commitTransaction"]
#: Commands a client sends on its own (sessions, monitoring), not for a use case.
BACKGROUND = {"endSessions", "hello", "isMaster", "ismaster", "killCursors"}


@dataclass
class Commands(monitoring.CommandListener):
    """Every command the client sends (name, body) and every reply, in order."""

    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    replies: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name not in BACKGROUND:
            self.sent.append((event.command_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.command_name not in BACKGROUND:
            self.replies.append((event.command_name, dict(event.reply)))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def clear(self) -> None:
        self.sent.clear()
        self.replies.clear()

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.sent]

    def reply(self, name: str, nth: int = 0) -> dict[str, Any]:
        return [reply for command, reply in self.replies if command == name][nth]


@dataclass
class Counted:
    service: EventoService
    repository: EventoRepository
    commands: Commands
    client: AsyncMongoClient
    database: str

    async def create(self, aforo: int = 0, seats: int = 0) -> domain.Evento:
        labels = tuple(f"S-{i}" for i in range(seats))
        return await self.service.create(EventoDraft("Concierto", FECHA, "Estadio", aforo if not seats else 0, 100, "", labels))

    async def counted(self, call: Any) -> tuple[Any, list[str]]:
        """Await `call`; return its result and the names of the commands it sent."""
        self.commands.clear()
        result = await call
        return result, self.commands.names


@pytest.fixture(scope="module")
def failpoint_mongo_uri(logs_dir: Path) -> Iterator[str]:
    """A SecantusDB of this module's own that takes failpoints (mongod's enableTestCommands)."""
    port = procs.free_port()
    plain = procs.mongo_process(port, ":memory:")
    server = dataclasses.replace(
        plain, argv=[*plain.argv, "--enable-test-commands"], log_path=logs_dir / "mongodb-failpoints.log"
    ).start()
    server.wait_listening()
    yield f"mongodb://127.0.0.1:{port}/?directConnection=true"
    server.stop()


async def _counted(mongo_uri: str, database: str) -> AsyncIterator[Counted]:
    commands = Commands()
    client: AsyncMongoClient = AsyncMongoClient(mongo_uri, tz_aware=True, event_listeners=[commands], appname="eventos-scale")
    repository = EventoRepository(client[database])
    await repository.ensure_indexes()
    await repository.sessions.start()  # as the server does before SERVING: the takes counted send only their own
    yield Counted(service_of(repository), repository, commands, client, database)
    await client.close()


@pytest.fixture
async def counted(mongo_uri: str, db_name: Callable[[str], str]) -> AsyncIterator[Counted]:
    """The use cases on the session's server, every command they send recorded."""
    async for value in _counted(mongo_uri, db_name("eventos")):
        yield value


@pytest.fixture
async def failing(failpoint_mongo_uri: str, db_name: Callable[[str], str]) -> AsyncIterator[Counted]:
    """The same on a server that takes failpoints (scoped to this client's appname)."""
    async for value in _counted(failpoint_mongo_uri, db_name("eventos")):
        yield value


async def seed_allocations(counted: Counted, evento_id: str, n: int) -> None:
    """Give the event `n` active allocations of one ticket each, as stored, without n takes (setup only)."""
    docs = [
        {"_id": allocation_id(evento_id, f"seed-{i}"), "tipo": ALLOCATION, "evento_id": evento_id,
         "reserva_id": f"seed-{i}", "cantidad": 1, "asientos": [], "liberada": False}
        for i in range(n)
    ]  # fmt: skip
    inventory = counted.client[counted.database][INVENTORY]
    for start in range(0, n, 5_000):
        await inventory.insert_many(docs[start : start + 5_000], ordered=False)
    await counted.client[counted.database]["eventos"].update_one(
        {"_id": evento_id}, {"$inc": {"entradas_disponibles": -n, "inventario_version": n}}
    )


async def check_stored_invariant(counted: Counted, evento_id: str) -> None:
    evento = await counted.service.get(evento_id)
    allocations = await counted.repository.allocations(evento_id)
    assert evento.entradas_disponibles + sum(a.cantidad for a in allocations) == evento.aforo_total
    held = [seat for a in allocations for seat in a.asientos]
    assert len(held) == len(set(held)) and not set(held) & set(evento.asientos_disponibles)
    if evento.seated:
        assert sorted([*held, *evento.asientos_disponibles]) == sorted(evento.asientos)


class TestCommandBudget:
    async def test_a_take_is_four_commands_and_the_saga_read_one(self, counted: Counted) -> None:
        plain = await counted.create(aforo=10)
        seated = await counted.create(seats=10)
        await counted.service.reservar(ReservaRequest(plain.id, "warm-up", 1))  # connections and sessions pooled

        evento, names = await counted.counted(counted.service.get(plain.id, domain.validate_read_mask(SAGA_FIELDS)))
        assert names == ["find"] and evento.fecha == FECHA
        evento, names = await counted.counted(counted.service.get(seated.id, domain.validate_read_mask(SAGA_FIELDS)))
        assert names == ["find"] and evento.seated and evento.asientos == ()

        taken, names = await counted.counted(counted.service.reservar(ReservaRequest(plain.id, "r1", 2)))
        assert names == TAKE
        assert (taken.cantidad, taken.entradas_disponibles, taken.inventario_version) == (2, 7, 2)
        taken, names = await counted.counted(counted.service.reservar(ReservaRequest(seated.id, "r1", 3, ("S-1", "S-5", "S-9"))))
        assert names == TAKE
        assert (taken.asientos, taken.entradas_disponibles, taken.inventario_version) == (("S-1", "S-5", "S-9"), 7, 1)

    async def test_refusals_retries_and_give_backs(self, counted: Counted) -> None:
        evento = await counted.create(aforo=2)
        await counted.service.reservar(ReservaRequest(evento.id, "r1", 2))
        # The take is refused at its first command; two reads explain why.
        with pytest.raises(FailedPrecondition) as refused:
            await counted.counted(counted.service.reservar(ReservaRequest(evento.id, "r2", 1)))
        assert counted.commands.names == ["find", "abortTransaction", "find", "find"]
        assert refused.value.reason == "SOLD_OUT"
        assert refused.value.metadata == {"evento_id": evento.id, "disponibles": "0", "inventario_version": "1"}
        _, names = await counted.counted(counted.service.liberar(evento.id, "r1"))
        assert names == ["find", "find", *TAKE]
        _, names = await counted.counted(counted.service.liberar(evento.id, "r1"))  # a repeat only reads
        assert names == ["find", "find"]
        _, names = await counted.counted(counted.service.liberar(evento.id, "never"))  # a tombstone
        assert names == ["find", "find", "insert"]


class TestGroupCommit:
    async def test_a_burst_of_takes_of_one_event_shares_transactions_and_sells_exactly_the_capacity(
        self, counted: Counted
    ) -> None:
        evento = await counted.create(aforo=50)
        await counted.service.reservar(ReservaRequest(evento.id, "warm-up", 1))
        counted.commands.clear()
        outcomes = await asyncio.gather(
            *(counted.service.reservar(ReservaRequest(evento.id, f"r{i}", 1 + i % 3)) for i in range(40)),
            return_exceptions=True,
        )
        taken = [o for o in outcomes if not isinstance(o, BaseException)]
        refused = [o for o in outcomes if isinstance(o, BaseException)]
        assert all(isinstance(f, FailedPrecondition) and f.reason == "SOLD_OUT" for f in refused), refused
        assert sum(t.cantidad for t in taken) <= 49 and sum(t.cantidad for t in taken) + 3 > 49  # sold to the last fit
        commits = counted.commands.names.count("commitTransaction")
        assert commits < len(taken) / 2, f"{commits} transactions for {len(taken)} takes"
        # Each answer is what a take alone would have answered, in order: versions are distinct.
        assert len({t.inventario_version for t in taken}) == len(taken)
        for t in taken:
            again = await counted.service.reservar(ReservaRequest(evento.id, t.reserva_id, t.cantidad))
            assert (again.cantidad, again.reserva_id) == (t.cantidad, t.reserva_id)  # an idempotent retry
        await check_stored_invariant(counted, evento.id)

    async def test_a_seat_wanted_twice_in_one_batch_goes_to_one_buyer(self, counted: Counted) -> None:
        evento = await counted.create(seats=10)
        wanted = [("S-1", "S-2"), ("S-2", "S-3"), ("S-4",), ("S-4", "S-5"), ("S-6",)]
        outcomes = await asyncio.gather(
            *(counted.service.reservar(ReservaRequest(evento.id, f"r{i}", len(s), s)) for i, s in enumerate(wanted)),
            return_exceptions=True,
        )
        held = [seat for o in outcomes if not isinstance(o, BaseException) for seat in o.asientos]
        assert len(held) == len(set(held))  # no seat sold twice
        assert {"S-6"} <= set(held)
        assert all(o.reason == "SEAT_TAKEN" for o in outcomes if isinstance(o, BaseException))  # type: ignore[union-attr]
        await check_stored_invariant(counted, evento.id)


class TestConstantCost:
    @pytest.mark.slow
    async def test_a_big_event_and_many_allocations_cost_the_same_commands_and_o_k_documents(self, counted: Counted) -> None:
        small = await counted.create(seats=100)
        big = await counted.create(seats=50_000)
        fresh = await counted.create(aforo=30_000)
        sold = await counted.create(aforo=30_000)
        await seed_allocations(counted, sold.id, 20_000)

        timings: dict[str, list[float]] = {}
        for name, evento, seats in [("100 seats", small, True), ("50,000 seats", big, True),
                                    ("0 allocations", fresh, False), ("20,000 allocations", sold, False)]:  # fmt: skip
            timings[name] = []
            for i in range(20):
                k = 1 + i % 3
                labels = tuple(f"S-{3 * i + j}" for j in range(k)) if seats else ()
                started = time.perf_counter()
                taken, names = await counted.counted(counted.service.reservar(ReservaRequest(evento.id, f"r{i}", k, labels)))
                timings[name].append(time.perf_counter() - started)
                assert names == TAKE, name
                assert taken.cantidad == k
                # Documents touched: the event, the allocation and its k seats, nothing else.
                counters = counted.commands.reply("update", 0)
                assert (counters["n"], counters["nModified"]) == (1, 1)
                update = counted.commands.reply("update", 1)
                assert (update["n"], update["nModified"]) == (1 + len(labels), len(labels))
                assert all(len(str(body)) < 2_000 for _, body in counted.commands.sent), "a command carries the seat map"
                assert all(len(str(reply)) < 2_000 for _, reply in counted.commands.replies), "a reply carries the seat map"
        print("\nReservarEntradas latency, median of 20 (ms):")
        for name, values in timings.items():
            print(f"  {name:>20}: {statistics.median(values) * 1000:7.2f}")
        for evento in (small, big, fresh, sold):
            await check_stored_invariant(counted, evento.id)


class TestCrashPoints:
    async def fail_once(self, failing: Counted, command: str, **data: Any) -> None:
        try:
            await failing.client.admin.command(
                "configureFailPoint", "failCommand", mode={"times": 1},
                data={"failCommands": [command], "appName": "eventos-scale", **data},
            )  # fmt: skip
        except OperationFailure:  # EVENTFLOW_TEST_MONGODB_URI: a mongod without enableTestCommands
            pytest.skip("this server does not take failpoints")

    @pytest.mark.parametrize("command", TAKE)
    async def test_a_connection_lost_at_any_command_of_a_take_takes_once(self, failing: Counted, command: str) -> None:
        # A lost connection inside a transaction is a TransientTransactionError (the transaction is retried);
        # at the commit an UnknownTransactionCommitResult (the commit is retried): either way, exactly once.
        evento = await failing.create(seats=5)
        await failing.service.reservar(ReservaRequest(evento.id, "warm-up", 1, ("S-0",)))
        await self.fail_once(failing, command, closeConnection=True)
        taken = await failing.service.reservar(ReservaRequest(evento.id, "r1", 2, ("S-1", "S-2")))
        assert (taken.entradas_disponibles, taken.inventario_version) == (2, 2)
        again = await failing.service.reservar(ReservaRequest(evento.id, "r1", 2, ("S-1", "S-2")))
        assert again == taken
        await check_stored_invariant(failing, evento.id)

    async def test_an_error_between_the_writes_leaves_nothing(self, failing: Counted) -> None:
        # The process stops between the event's update and the seats' (an error no retry hides): the
        # transaction is aborted, nothing of it is seen, and the same reserva_id can still take.
        evento = await failing.create(seats=5)
        await self.fail_once(failing, "update", errorCode=2)  # BadValue: not transient
        with pytest.raises(OperationFailure):
            await failing.service.reservar(ReservaRequest(evento.id, "r1", 2, ("S-1", "S-2")))
        after = await failing.service.get(evento.id)
        assert (after.entradas_disponibles, after.inventario_version, await failing.repository.allocations(evento.id)) == (5, 0, [])
        taken = await failing.service.reservar(ReservaRequest(evento.id, "r1", 2, ("S-1", "S-2")))
        assert (taken.entradas_disponibles, taken.inventario_version) == (3, 1)
        await check_stored_invariant(failing, evento.id)


async def test_two_processes_racing_sell_exactly_the_capacity(counted: Counted, mongo_uri: str) -> None:
    """Two eventos replicas (no shared lock): their transactions conflict and are retried, and never oversell."""
    other_client: AsyncMongoClient = AsyncMongoClient(mongo_uri, tz_aware=True)
    other = service_of(EventoRepository(other_client[counted.database]))
    try:
        evento = await counted.create(aforo=30)
        seated = await counted.create(seats=10)
        calls = [
            service.reservar(ReservaRequest(evento.id, f"{name}{i}", 1))
            for i in range(25)
            for name, service in (("a", counted.service), ("b", other))
        ] + [
            service.reservar(ReservaRequest(seated.id, f"{name}{i}", 2, (f"S-{i % 10}", f"S-{(i + 1) % 10}")))
            for i in range(10)
            for name, service in (("a", counted.service), ("b", other))
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        assert all(isinstance(f, FailedPrecondition) and f.reason in ("SOLD_OUT", "SEAT_TAKEN") for f in failures), failures
        assert (await counted.service.get(evento.id)).entradas_disponibles == 0
        assert sum(a.cantidad for a in await counted.repository.allocations(evento.id)) == 30
        for e in (evento, seated):
            await check_stored_invariant(counted, e.id)
    finally:
        await other_client.close()


async def test_delete_removes_the_inventory(counted: Counted) -> None:
    evento = await counted.create(seats=10)
    await counted.service.reservar(ReservaRequest(evento.id, "r1", 1, ("S-1",)))
    await counted.service.liberar(evento.id, "r1")
    await counted.service.liberar(evento.id, "never")
    await counted.service.delete(evento.id)
    assert await counted.client[counted.database][INVENTORY].count_documents({"evento_id": evento.id}) == 0
