"""The only module that knows how events and their inventory are stored in MongoDB.

One small document per event, in the `eventos` collection, the same size however many tickets
are sold (the seat map and every allocation live in `inventario`):

    {
      "_id": "665f1c...",                 # str(ObjectId): server-generated, sortable by creation
      "nombre": str, "fecha": date, "lugar": str,
      "aforo_total": int, "entradas_disponibles": int, "precio": int, "moneda": str,
      "con_asientos": bool,               # has a seat map (immutable)
      "inventario_version": int,          # +1 on every take, give-back and capacity change
      "max_por_usuario": int,             # tickets one buyer may hold, 0: no limit (absent before it existed)
    }

The `inventario` collection holds the rest, in documents whose `_id` is a JSON array (unambiguous
whatever the strings hold, and unique: a reserva_id takes from an event once):

    seat map:    {"_id": '["plano","<evento_id>"]', "tipo": "plano", "evento_id": str,
                  "asientos": [str]}       # in order; immutable, read only to answer the seat map
    seat:        {"_id": '["asiento","<evento_id>","A-12"]', "tipo": "asiento", "evento_id": str,
                  "asiento": "A-12", "reserva_id": str | None}   # who holds it; None: available
    allocation:  {"_id": '["reserva","<evento_id>","<reserva_id>"]', "tipo": "reserva", "evento_id": str,
                  "reserva_id": str, "cantidad": int, "asientos": [str],
                  "usuario_id": str,       # the buyer ("" or absent: the take named none)
                  "liberada": bool}        # True: a tombstone, this reserva_id can never take again
                                           # (cantidad/asientos: what it gave back, 0/[] if nothing)
    buyer:       {"_id": '["comprador","<evento_id>","<usuario_id>"]', "tipo": "comprador", "evento_id": str,
                  "usuario_id": str, "entradas": int}   # tickets the buyer's active allocations hold

Atomicity: a take or a give-back changes the event's counter, one allocation, its k seats and
its buyer's count in one multi-document transaction, so there is no intermediate state for a
crash to leave behind: an uncommitted transaction is discarded. Its first write is the
conditional update of the event (enough tickets left, seats named iff it has a seat map), so
concurrent transactions conflict at once, before doing more work; a write conflict is a
TransientTransactionError that `with_transaction` retries with backoff. Within this process,
writers of one event also queue on a lock, so they do not waste attempts conflicting with each
other. Idempotency per reserva_id: the allocation's `_id` (an upsert that must insert), the
seats' holder (an update that must modify all k of them), and a tombstone that stays after the
give-back.

Tickets per buyer: every take that names its buyer adds to the buyer's count, and its give-back
subtracts, whether or not the event has a limit, so a limit set later counts what each buyer
already holds. When the event has one (`max_por_usuario`, read in the take's transaction, and the
event's update filtered on it), the count moves only if it stays within it: an upsert that
creates the count at 0, then an update filtered on `entradas <= limit - cantidad`, which must
modify it. Without a limit it is one upsert that adds.

A take is 4 commands whatever the event's size or sales: a read of the event's counters, an update
of them filtered on the version read, one `update` of `inventario` (the allocation upsert, the
seats' updateMany and the buyer's count), commitTransaction. The takes of one event that arrive
while one is written wait and go together in the next transaction (group commit): still 4 commands
for the batch, 5 when the event limits tickets per buyer (a read of the batch's buyers' counts,
to choose the takes that fit).
Reading an event with its seats (the seat map, and the available seats in seat-map order) reads
its seat map document and the smaller side of its seats, the held ones or the free ones, in one
snapshot, so the answer's seats agree with its counter.

The earlier shape (up to c6109af) kept the inventory inside the event: `asientos` (the seat map),
`asientos_disponibles`, `reservas` (the active allocations, `[{reserva_id, cantidad, asientos}]`)
and `reservas_liberadas` (the tombstones, reserva_ids only). `migrate_legacy` moves such events to
this shape when the service starts, before it serves. It writes the event's inventory first, as
inserts that ignore duplicates (a seat, map, allocation or tombstone already there is left as it
is), and rewrites the event LAST, in one update filtered on the old fields still being there. Until
that update the event is in the old shape and nothing of this version takes from or gives back to
it (its counters lack `inventario_version`), so a crash anywhere leaves an event that the next run
migrates again from the start; after it, another replica's run finds nothing and its inserts, if
late, collide with what is there. It assumes no process of the earlier version still writes: stop
them before starting this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, IndexModel, ReturnDocument, UpdateMany, UpdateOne
from pymongo.read_concern import ReadConcern
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError
from pymongo.results import BulkWriteResult

from eventos.domain import Allocation, Evento, InventoryChange, NewEvento, ReservaRequest, Stock, within_limit
from infra.group_commit import DUPLICATE_KEY
from eventos.sessions import TransactionSessions
from infra.mongo import MAJORITY, for_reads, for_writes

log = logging.getLogger(__name__)

COLLECTION = "eventos"
INVENTORY = "inventario"
SEAT_MAP = "plano"
SEAT = "asiento"
ALLOCATION = "reserva"
BUYER = "comprador"
#: Seat documents written per insert_many when an event is created.
SEAT_BATCH = 5_000
#: Seats per `$in` when a page of seats is read (a long `$in` is slow on some servers, SecantusDB among them).
SEAT_LOOKUP_BATCH = 100

#: What a take or a give-back needs of the event: never its seats.
_COUNTERS = {"entradas_disponibles": 1, "inventario_version": 1, "con_asientos": 1, "max_por_usuario": 1}

#: The fields of the earlier shape, inside the event (see the module docstring).
_LEGACY_FIELDS = ("asientos", "asientos_disponibles", "reservas", "reservas_liberadas")
#: An event still in the earlier shape: every such document has `reservas` (if only []), none since
#: has. Answered by the sparse index `legacy_reservas`, which holds only those documents.
_LEGACY = {"reservas": {"$exists": True}}


def seat_map_id(evento_id: str) -> str:
    return json.dumps([SEAT_MAP, evento_id], ensure_ascii=False, separators=(",", ":"))


def seat_id(evento_id: str, asiento: str) -> str:
    return json.dumps([SEAT, evento_id, asiento], ensure_ascii=False, separators=(",", ":"))


def allocation_id(evento_id: str, reserva_id: str) -> str:
    return json.dumps([ALLOCATION, evento_id, reserva_id], ensure_ascii=False, separators=(",", ":"))


def buyer_id(evento_id: str, usuario_id: str) -> str:
    return json.dumps([BUYER, evento_id, usuario_id], ensure_ascii=False, separators=(",", ":"))


def _limit(doc: Mapping[str, Any]) -> int:
    """An event's max_por_usuario (0: none; events stored before it existed have none)."""
    return int(doc.get("max_por_usuario") or 0)


def _to_evento(doc: Mapping[str, Any], seats: tuple[Sequence[str], Sequence[str]] = ((), ())) -> Evento:
    """An event; `seats` are its seat map and available seats, when they were read."""
    return Evento(
        id=doc["_id"],
        nombre=doc["nombre"],
        fecha=doc["fecha"],
        lugar=doc["lugar"],
        aforo_total=doc["aforo_total"],
        entradas_disponibles=doc["entradas_disponibles"],
        precio=doc["precio"],
        moneda=doc["moneda"],
        asientos=tuple(seats[0]),
        asientos_disponibles=tuple(seats[1]),
        con_asientos=doc["con_asientos"],
        inventario_version=doc["inventario_version"],
        max_por_usuario=_limit(doc),
    )


def _to_allocation(doc: Mapping[str, Any]) -> Allocation:
    return Allocation(doc["reserva_id"], doc["cantidad"], tuple(doc.get("asientos") or ()), doc.get("usuario_id") or "")


def _to_stock(evento_id: str, doc: Mapping[str, Any], holders: Mapping[str, str | None], compradas: int = 0) -> Stock:
    return Stock(
        evento_id, doc["entradas_disponibles"], doc["inventario_version"], doc["con_asientos"], holders,
        _limit(doc), compradas,
    )  # fmt: skip


@dataclass
class _Writes:
    """A transaction's writes to `inventario`, and what its bulk write's result must show for all of them to
    have applied: the upserts that must insert (allocations), the documents the conditional updates must
    modify (seats, limited buyers' counts), and the upserts that insert or else modify one (unlimited
    buyers' counts)."""

    ops: list[UpdateOne | UpdateMany] = field(default_factory=list)
    inserts: list[int] = field(default_factory=list)
    modifies: int = 0
    inserts_or_modifies: list[int] = field(default_factory=list)

    def add(self, op: UpdateOne | UpdateMany, *, insert: bool = False, modifies: int = 0, either: bool = False) -> None:
        if insert:
            self.inserts.append(len(self.ops))
        if either:
            self.inserts_or_modifies.append(len(self.ops))
        self.modifies += modifies
        self.ops.append(op)

    def applied(self, result: BulkWriteResult) -> bool:
        upserted = result.upserted_ids or {}
        expected = self.modifies + sum(1 for i in self.inserts_or_modifies if i not in upserted)
        return all(i in upserted for i in self.inserts) and result.modified_count == expected


def _settle(outcome: asyncio.Future[Any], result: Any = None, error: BaseException | None = None) -> None:
    """Give a waiting take its outcome, unless its caller stopped waiting (cancelled)."""
    if outcome.done():
        return
    if error is not None:
        outcome.set_exception(error)
    else:
        outcome.set_result(result)


def _unchanged(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A filter that matches the event only if its version and limit are still those of `doc`."""
    return {"inventario_version": doc["inventario_version"], "max_por_usuario": doc.get("max_por_usuario")}


class _Refused(Exception):
    """Raised inside a transaction whose condition does not hold: with_transaction aborts it."""


class _EventLocks:
    """One asyncio lock per event, held while this process changes its inventory, dropped when unused.

    Only a queue: correctness comes from the transactions (other processes do not see these locks).
    Without it, concurrent takes of one event conflict in the store and retry, about ten times the work.
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, evento_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(evento_id, (asyncio.Lock(), 0))
        self._locks[evento_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[evento_id]
            if users == 1:
                del self._locks[evento_id]
            else:
                self._locks[evento_id] = (lock, users - 1)


class EventoRepository:
    def __init__(self, db: AsyncDatabase) -> None:
        self._client = db.client
        collection = db[COLLECTION]
        self._reads = for_reads(collection)
        self._writes = for_writes(collection)
        inventory = db[INVENTORY]
        self._inventory_reads = for_reads(inventory)
        self._inventory = for_writes(inventory)
        self._locks = _EventLocks()
        #: The sessions its write transactions run on (see eventos.sessions; the server starts them before SERVING).
        self.sessions = TransactionSessions(db)
        #: Group commit of takes: the takes waiting per event, and the events being written.
        self._waiting: dict[str, list[tuple[ReservaRequest, asyncio.Future[InventoryChange | None]]]] = {}
        self._draining: set[str] = set()
        self._drains: set[asyncio.Task[None]] = set()

    async def ensure_indexes(self) -> None:
        await self._writes.create_index([("fecha", ASCENDING), ("_id", ASCENDING)], name="fecha_id")
        await self._writes.create_index(
            [("lugar", ASCENDING), ("fecha", ASCENDING), ("_id", ASCENDING)], name="lugar_fecha_id"
        )
        # The events still in the earlier shape (migrate_legacy), and only them: sparse, so the events
        # written since are not in it, and finding none is one lookup in an empty index.
        await self._writes.create_index([("reservas", ASCENDING)], sparse=True, name="legacy_reservas")
        # An event's held or free seats, its allocations (tipo "reserva"), everything of it on delete.
        await self._inventory.create_indexes(
            [
                IndexModel(
                    [("evento_id", ASCENDING), ("tipo", ASCENDING), ("reserva_id", ASCENDING)], name="evento_tipo_reserva"
                )
            ]
        )

    async def _transaction(self, evento_id: str, body: Any) -> Any:
        """Run `body(session)` in a transaction (retried on transient errors); _Refused aborts it and gives None."""
        async with self._locks.hold(evento_id), self.sessions.session() as session:
            try:
                return await session.with_transaction(body, write_concern=MAJORITY)
            except _Refused:
                return None

    async def _move_counter(
        self, session: AsyncClientSession, evento_id: str, delta: int, condition: Mapping[str, Any]
    ) -> Mapping[str, Any] | None:
        """Inside a take's or give-back's transaction: add `delta` to the event's tickets and bump its
        inventory version, if the event exists and matches `condition`; its counters after, or None.
        The update is filtered on the version and the max_por_usuario read, so a take is judged against
        the limit the event has when it commits.

        A read and an update filtered on the version read (so a change in between matches nothing),
        not a findAndModify: SecantusDB's findAndModify scans the whole collection, so its cost would
        grow with the number of events; these two use the _id index on any server.
        """
        doc = await self._writes.find_one({"_id": evento_id, **condition}, _COUNTERS, session=session)
        if doc is None:
            return None
        result = await self._writes.update_one(
            {"_id": evento_id, **_unchanged(doc), **condition},
            {"$inc": {"entradas_disponibles": delta, "inventario_version": 1}},
            session=session,
        )
        if result.modified_count != 1:
            return None
        return {
            **doc,
            "entradas_disponibles": doc["entradas_disponibles"] + delta,
            "inventario_version": doc["inventario_version"] + 1,
        }

    # --- catalogue ---------------------------------------------------------------------------

    async def add(self, new: NewEvento) -> Evento:
        """Insert the seats first (in bounded batches), then the event: an event is never seen without its seats.

        A crash in between leaves seats of an id no event will ever have, which nothing reads.
        """
        evento_id = str(ObjectId())
        seats = [
            {"_id": seat_id(evento_id, label), "tipo": SEAT, "evento_id": evento_id, "asiento": label, "reserva_id": None}
            for label in new.asientos
        ]
        for start in range(0, len(seats), SEAT_BATCH):
            await self._inventory.insert_many(seats[start : start + SEAT_BATCH], ordered=False)
        if seats:
            plano = {"_id": seat_map_id(evento_id), "tipo": SEAT_MAP, "evento_id": evento_id, "asientos": list(new.asientos)}
            await self._inventory.insert_one(plano)
        doc = {
            "_id": evento_id,
            "nombre": new.nombre,
            "fecha": new.fecha,
            "lugar": new.lugar,
            "aforo_total": new.aforo_total,
            "entradas_disponibles": new.aforo_total,
            "precio": new.precio,
            "moneda": new.moneda,
            "con_asientos": bool(seats),
            "inventario_version": 0,
            "max_por_usuario": new.max_por_usuario,
        }
        await self._writes.insert_one(doc)
        return _to_evento(doc, (new.asientos, new.asientos))

    async def get(self, evento_id: str, *, primary: bool = False, with_seats: bool = True) -> Evento | None:
        """One event; `primary` when the caller is about to change it and needs the latest state.

        `with_seats`: also its seat map and available seats (for a seated event, a snapshot read on
        the primary of its seat map and the smaller side of its seats).
        """
        collection = self._writes if primary else self._reads
        doc = await collection.find_one({"_id": evento_id})
        if doc is None or not with_seats or not doc["con_asientos"]:
            return None if doc is None else _to_evento(doc)
        return (await self._with_seats([evento_id])).get(evento_id)

    async def _with_seats(self, seated: Sequence[str]) -> dict[str, Evento]:
        """The seated events `seated` (those still there), seats included, read in one snapshot."""

        async def body(session: AsyncClientSession) -> dict[str, Evento]:
            docs = [doc async for doc in self._writes.find({"_id": {"$in": list(seated)}}, session=session)]
            maps = {
                doc["evento_id"]: doc["asientos"]
                async for doc in self._inventory.find({"_id": {"$in": [seat_map_id(d["_id"]) for d in docs]}}, session=session)
            }
            found = {}
            for doc in docs:
                asientos = maps[doc["_id"]]
                free, aforo = doc["entradas_disponibles"], doc["aforo_total"]
                # Read whichever side is smaller: the free seats or the held ones.
                holder = None if free <= aforo - free else {"$gt": ""}
                query = {"evento_id": doc["_id"], "tipo": SEAT, "reserva_id": holder}
                side = {seat["asiento"] async for seat in self._inventory.find(query, {"_id": 0, "asiento": 1}, session=session)}
                available = [a for a in asientos if (a in side) == (holder is None)]
                found[doc["_id"]] = _to_evento(doc, (asientos, available))
            return found

        async with self._client.start_session() as session:
            return await session.with_transaction(body, read_concern=ReadConcern("snapshot"))

    async def seat_window(self, evento_id: str, start: int, count: int) -> tuple[int, list[tuple[str, bool]]] | None:
        """Up to `count` seats of the event's seat map from position `start`, in seat-map order, each with whether
        it is available; and how many seats the map has. None when there is no such event.

        Reads a slice of the seat map document and the holders of those seats only (O(count), whatever the
        map's size), from the read preference of lists: a page of seats may be a moment behind the counter.
        """
        doc = await self._reads.find_one({"_id": evento_id}, {"aforo_total": 1, "con_asientos": 1})
        if doc is None:
            return None
        if not doc["con_asientos"] or count <= 0:
            return (doc["aforo_total"] if doc["con_asientos"] else 0), []
        plano = await self._inventory_reads.find_one(
            {"_id": seat_map_id(evento_id)}, {"_id": 0, "asientos": {"$slice": [start, count]}}
        )
        labels: list[str] = list(plano["asientos"]) if plano else []
        held: set[str] = set()
        for first in range(0, len(labels), SEAT_LOOKUP_BATCH):
            ids = [seat_id(evento_id, label) for label in labels[first : first + SEAT_LOOKUP_BATCH]]
            query = {"_id": {"$in": ids}, "reserva_id": {"$ne": None}}
            held.update([seat["asiento"] async for seat in self._inventory_reads.find(query, {"_id": 0, "asiento": 1})])
        return doc["aforo_total"], [(label, label not in held) for label in labels]

    async def list(
        self,
        *,
        lugar: str | None,
        desde: datetime | None,
        hasta: datetime | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Evento]:
        """Events ordered by (fecha, id), those after the position `after` (keyset pagination), without their
        seat lists: a page of big seated events would otherwise be tens of megabytes (GetEvento has them)."""
        clauses: list[dict[str, Any]] = []
        if lugar is not None:
            clauses.append({"lugar": lugar})
        fecha: dict[str, datetime] = {}
        if desde is not None:
            fecha["$gte"] = desde
        if hasta is not None:
            fecha["$lte"] = hasta
        if fecha:
            clauses.append({"fecha": fecha})
        if after is not None:
            last_fecha, last_id = after
            clauses.append({"$or": [{"fecha": {"$gt": last_fecha}}, {"fecha": last_fecha, "_id": {"$gt": last_id}}]})
        query = {"$and": clauses} if clauses else {}
        cursor = self._reads.find(query).sort([("fecha", ASCENDING), ("_id", ASCENDING)]).limit(limit)
        return [_to_evento(doc) async for doc in cursor]

    async def update(
        self, evento_id: str, changes: Mapping[str, Any], expected_aforo: int, expected_max: int = 0
    ) -> Evento | None:
        """Apply `changes` atomically, provided aforo_total and max_por_usuario are still `expected_aforo` and
        `expected_max` (so the two, judged together, stay consistent: the limit never above the capacity).

        A new aforo_total moves entradas_disponibles by the same difference, and only if that
        leaves it at 0 or more (the tickets taken meanwhile are re-checked in the filter); it is a
        change of the inventory, so it increments inventario_version. Answers the event without
        its seats. None when nothing matched: the event is gone, its capacity changed, or too
        many tickets are taken.
        """
        query: dict[str, Any] = {
            "_id": evento_id,
            "aforo_total": expected_aforo,
            "max_por_usuario": expected_max if expected_max else {"$in": [0, None]},
        }
        update: dict[str, Any] = {"$set": dict(changes)}
        new_aforo = changes.get("aforo_total")
        if new_aforo is not None and new_aforo != expected_aforo:
            delta = new_aforo - expected_aforo
            query["entradas_disponibles"] = {"$gte": -delta}
            update["$inc"] = {"entradas_disponibles": delta, "inventario_version": 1}
        doc = await self._writes.find_one_and_update(query, update, return_document=ReturnDocument.AFTER)
        return None if doc is None else _to_evento(doc)

    async def delete_if_untaken(self, evento_id: str) -> bool:
        """Delete the event only if no reservation holds tickets of it (all of them are available), then its seats,
        allocations and tombstones.

        The event goes first, in one conditional operation: once it is gone nothing can take from it,
        and what a crash leaves of its inventory belongs to an id no new event will have. Against a
        concurrent take: a take commits its decrement of the event's counter before the delete (the
        delete then matches nothing: the caller is told tickets are taken), or its transaction's update
        of the event meets the deletion (a write conflict: retried, it finds no event, EVENTO_NOT_FOUND),
        so no take outlives the event.

        It holds the event's lock, as this process's takes do for their transactions: none of them is in flight
        while the inventory is removed. (The embedded SecantusDB could livelock on that race: its multi-document
        delete and a take's transaction each retried the other's write conflict until the caller's deadline.)
        """
        async with self._locks.hold(evento_id):
            result = await self._writes.delete_one(
                {"_id": evento_id, "$expr": {"$eq": ["$entradas_disponibles", "$aforo_total"]}}
            )
            if result.deleted_count != 1:
                return False
            await self._inventory.delete_many({"evento_id": evento_id})
        return True

    # --- inventory ---------------------------------------------------------------------------

    async def take(self, request: ReservaRequest) -> InventoryChange | None:
        """Take the tickets (and seats) of `request` for its reserva_id, all or nothing, in one transaction.

        Commits only if the event has enough tickets and a seat map iff seats are named, this
        reserva_id has no allocation (active or released), and every named seat exists and is
        available. None when it did not commit: see `snapshot_for` to learn why.

        Group commit: the takes of one event that arrive while one is being written wait and go
        together in the next transaction (`_take_together`), so a burst of buyers of one event costs
        a few transactions, not one each.
        """
        outcome: asyncio.Future[InventoryChange | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(request.evento_id, []).append((request, outcome))
        if request.evento_id not in self._draining:
            self._draining.add(request.evento_id)
            task = asyncio.create_task(self._drain(request.evento_id), name=f"takes-{request.evento_id}")
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)
        return await outcome

    async def close(self) -> None:
        """Stop writing takes (shutdown): the batches in flight are cancelled, so their transactions are
        aborted while the client is still open, instead of being left open on the server, where they would
        block the event's writers until the server reaps them (60 s by default)."""
        for task in list(self._drains):
            task.cancel()
        if self._drains:
            await asyncio.wait(list(self._drains), timeout=5)
        await self.sessions.close()

    async def _drain(self, evento_id: str) -> None:
        """Write the event's waiting takes, a batch at a time, until none is waiting.

        Each caller gets its own outcome: a batch that cannot be written together is taken one by one,
        and one take's error is only its caller's. Cancelled (shutdown), it leaves no caller waiting.
        """
        batch: list[tuple[ReservaRequest, asyncio.Future[InventoryChange | None]]] = []
        try:
            while batch := self._waiting.pop(evento_id, None) or []:
                batch = [(request, outcome) for request, outcome in batch if not outcome.done()]
                together = None
                if len(batch) > 1:
                    try:
                        together = await self._take_together(evento_id, [request for request, _ in batch])
                    except Exception:  # noqa: BLE001 - the takes are tried one by one, each with its own outcome
                        log.warning("a batch of takes failed; taking them one by one", exc_info=True)
                if together is not None:
                    for (_, outcome), result in zip(batch, together, strict=True):
                        _settle(outcome, result)
                    continue
                for request, outcome in batch:  # alone, or a batch met a conflict: each on its own, in order
                    try:
                        _settle(outcome, await self._take_one(request))
                    except Exception as error:  # noqa: BLE001 - this take's caller gets it, and only it
                        _settle(outcome, error=error)
        except asyncio.CancelledError:
            for _, outcome in [*batch, *self._waiting.pop(evento_id, [])]:
                outcome.cancel()
            raise
        finally:
            self._draining.discard(evento_id)  # no await since the last pop: nothing arrived unseen

    async def _take_together(self, evento_id: str, requests: list[ReservaRequest]) -> list[InventoryChange | None] | None:
        """One transaction for several takes of one event: those that fit the tickets left (and, when the
        event limits them, their buyer's allowance), in order, are taken (the version goes up by one per
        take, as if they ran one after the other); the others are refused (None). None when the batch cannot
        be judged as a whole (a seat wanted twice or taken, a reserva_id with an allocation already, a mixed
        batch, a take naming no buyer of a limited event): then each is taken on its own.
        """

        async def body(session: AsyncClientSession) -> list[InventoryChange | None]:
            doc = await self._writes.find_one({"_id": evento_id}, _COUNTERS, session=session)
            if doc is None:
                raise _Refused
            limit = _limit(doc)
            if limit and not all(request.usuario_id for request in requests):
                raise _Refused  # the single take explains it
            held = await self._buyers(evento_id, {r.usuario_id for r in requests}, session) if limit else {}
            left, chosen, bought = doc["entradas_disponibles"], [], Counter[str]()
            for request in requests:
                if bool(request.asientos) != doc["con_asientos"]:
                    raise _Refused  # the single take explains it (a kind of error, not a refusal to share)
                buyer = request.usuario_id
                fits_buyer = within_limit(limit, held.get(buyer, 0) + bought[buyer], request.cantidad)
                if request.cantidad <= left and fits_buyer:
                    chosen.append(request)
                    left -= request.cantidad
                    bought[buyer] += request.cantidad
            if not chosen:
                return [None] * len(requests)
            writes = _Writes()
            for request in chosen:
                self._allocation_writes(writes, request)
            self._buyer_writes(writes, evento_id, bought, limit)
            result = await self._inventory.bulk_write(writes.ops, ordered=True, session=session)
            if not writes.applied(result):
                raise _Refused
            taken = doc["entradas_disponibles"] - left
            moved = await self._writes.update_one(
                {"_id": evento_id, **_unchanged(doc), "entradas_disponibles": {"$gte": taken}},
                {"$inc": {"entradas_disponibles": -taken, "inventario_version": len(chosen)}},
                session=session,
            )
            if moved.modified_count != 1:
                raise _Refused
            answers: dict[str, InventoryChange] = {}
            disponibles, version = doc["entradas_disponibles"], doc["inventario_version"]
            for request in chosen:
                disponibles, version = disponibles - request.cantidad, version + 1
                answers[request.reserva_id] = InventoryChange(
                    evento_id, request.reserva_id, request.cantidad, request.asientos, disponibles, version
                )
            return [answers.get(request.reserva_id) for request in requests]

        if len({request.reserva_id for request in requests}) != len(requests):
            return None  # the same reservation twice (a retry racing itself): one at a time
        return await self._transaction(evento_id, body)

    async def _take_one(self, request: ReservaRequest) -> InventoryChange | None:
        """One take in its own transaction (see `take`)."""
        rid = request.reserva_id

        async def body(session: AsyncClientSession) -> InventoryChange:
            condition = {"entradas_disponibles": {"$gte": request.cantidad}, "con_asientos": bool(request.asientos)}
            evento = await self._move_counter(session, request.evento_id, -request.cantidad, condition)
            if evento is None:
                raise _Refused
            limit = _limit(evento)
            if limit and not request.usuario_id:
                raise _Refused  # a limited event counts every ticket against its buyer
            writes = _Writes()
            self._allocation_writes(writes, request)
            self._buyer_writes(writes, request.evento_id, Counter({request.usuario_id: request.cantidad}), limit)
            result = await self._inventory.bulk_write(writes.ops, ordered=True, session=session)
            if not writes.applied(result):
                raise _Refused  # this reserva_id has an allocation, a seat is taken or unknown, or over the limit
            return InventoryChange(
                request.evento_id, rid, request.cantidad, request.asientos,
                evento["entradas_disponibles"], evento["inventario_version"],
            )  # fmt: skip

        return await self._transaction(request.evento_id, body)

    @staticmethod
    def _allocation_writes(writes: _Writes, request: ReservaRequest) -> None:
        """Insert the allocation (an upsert that must insert) and hold its seats (an update that must change each)."""
        rid, seats = request.reserva_id, list(request.asientos)
        allocation = {
            "tipo": ALLOCATION, "evento_id": request.evento_id, "reserva_id": rid,
            "cantidad": request.cantidad, "asientos": seats, "usuario_id": request.usuario_id, "liberada": False,
        }  # fmt: skip
        writes.add(
            UpdateOne({"_id": allocation_id(request.evento_id, rid)}, {"$setOnInsert": allocation}, upsert=True),
            insert=True,
        )
        if seats:
            ids = [seat_id(request.evento_id, label) for label in seats]
            hold = UpdateMany({"_id": {"$in": ids}, "reserva_id": None}, {"$set": {"reserva_id": rid}})
            writes.add(hold, modifies=len(ids))

    @staticmethod
    def _buyer_writes(writes: _Writes, evento_id: str, bought: Mapping[str, int], limit: int) -> None:
        """Add what each buyer takes to its count; with a limit, only within it (see the module docstring).
        Takes that name no buyer ("") are counted against no one."""
        for usuario_id, cantidad in bought.items():
            if not usuario_id or not cantidad:
                continue
            bid = buyer_id(evento_id, usuario_id)
            buyer = {"tipo": BUYER, "evento_id": evento_id, "usuario_id": usuario_id}
            if not limit:
                add = UpdateOne({"_id": bid}, {"$inc": {"entradas": cantidad}, "$setOnInsert": buyer}, upsert=True)
                writes.add(add, either=True)
                continue
            writes.add(UpdateOne({"_id": bid}, {"$setOnInsert": {**buyer, "entradas": 0}}, upsert=True))
            within = UpdateOne({"_id": bid, "entradas": {"$lte": limit - cantidad}}, {"$inc": {"entradas": cantidad}})
            writes.add(within, modifies=1)

    async def _buyers(self, evento_id: str, usuario_ids: set[str], session: AsyncClientSession) -> dict[str, int]:
        """Inside a take's transaction: the tickets each of these buyers holds of the event (absent: none)."""
        ids = [buyer_id(evento_id, usuario_id) for usuario_id in usuario_ids if usuario_id]
        cursor = self._inventory.find({"_id": {"$in": ids}}, {"usuario_id": 1, "entradas": 1}, session=session)
        return {doc["usuario_id"]: doc["entradas"] async for doc in cursor}

    async def snapshot_for(
        self, evento_id: str, reserva_id: str, asientos: Sequence[str] = (), usuario_id: str = ""
    ) -> tuple[Stock, Allocation | None, Allocation | None] | None:
        """From the primary: the event's counters and the holders of `asientos`, the tickets `usuario_id`
        holds of it, what `reserva_id` holds of it, and its tombstone (what it gave back) if it has one.
        None when the event does not exist. Two queries."""
        doc = await self._writes.find_one({"_id": evento_id}, _COUNTERS)
        if doc is None:
            return None
        aid = allocation_id(evento_id, reserva_id)
        bid = buyer_id(evento_id, usuario_id) if usuario_id else None
        ids = {seat_id(evento_id, label): label for label in asientos}
        holders: dict[str, str | None] = {}
        allocation: Mapping[str, Any] | None = None
        compradas = 0
        async for found in self._inventory.find({"_id": {"$in": [aid, *ids, *([bid] if bid else [])]}}):
            if found["_id"] == aid:
                allocation = found
            elif found["_id"] == bid:
                compradas = found["entradas"]
            else:
                holders[ids[found["_id"]]] = found["reserva_id"]
        stock = _to_stock(evento_id, doc, holders, compradas)
        if allocation is None:
            return stock, None, None
        if allocation["liberada"]:
            return stock, None, _to_allocation(allocation)
        return stock, _to_allocation(allocation), None

    async def give_back(self, evento_id: str, allocation: Allocation) -> InventoryChange | None:
        """Return what `allocation` took and spend its reserva_id, once, in one transaction.

        None if it no longer holds them (given back concurrently) or the event is gone. Its buyer's count
        goes down by as much: the allowance comes back.
        """
        rid = allocation.reserva_id
        writes = _Writes()
        spend = UpdateOne({"_id": allocation_id(evento_id, rid), "liberada": False}, {"$set": {"liberada": True}})
        writes.add(spend, modifies=1)
        if allocation.asientos:
            ids = [seat_id(evento_id, label) for label in allocation.asientos]
            free = UpdateMany({"_id": {"$in": ids}, "reserva_id": rid}, {"$set": {"reserva_id": None}})
            writes.add(free, modifies=len(ids))
        if allocation.usuario_id:
            bid, cantidad = buyer_id(evento_id, allocation.usuario_id), allocation.cantidad
            back = UpdateOne({"_id": bid, "entradas": {"$gte": cantidad}}, {"$inc": {"entradas": -cantidad}})
            writes.add(back, modifies=1)

        async def body(session: AsyncClientSession) -> InventoryChange:
            evento = await self._move_counter(session, evento_id, allocation.cantidad, {})
            if evento is None:
                raise _Refused
            result = await self._inventory.bulk_write(writes.ops, ordered=True, session=session)
            if not writes.applied(result):
                raise _Refused
            return InventoryChange.of(_to_stock(evento_id, evento, {}), allocation)

        return await self._transaction(evento_id, body)

    async def spend(self, evento_id: str, reserva_id: str) -> bool:
        """Leave a tombstone for a reserva_id that holds nothing, so a late ReservarEntradas of it takes nothing.

        False when the reserva_id took tickets (or was spent) meanwhile. Not a change of the inventory.
        """
        tombstone = {
            "_id": allocation_id(evento_id, reserva_id), "tipo": ALLOCATION, "evento_id": evento_id,
            "reserva_id": reserva_id, "cantidad": 0, "asientos": [], "liberada": True,
        }  # fmt: skip
        try:
            await self._inventory.insert_one(tombstone)
        except DuplicateKeyError:
            return False
        return True

    async def allocations(self, evento_id: str) -> list[Allocation]:
        """The active allocations of an event (from the primary): for audits and invariant checks."""
        cursor = self._inventory.find({"evento_id": evento_id, "tipo": ALLOCATION, "liberada": False})
        return [_to_allocation(doc) async for doc in cursor]

    # --- the earlier shape -------------------------------------------------------------------

    async def migrate_legacy(self) -> int:
        """Move every event still in the earlier shape to this one (see the module docstring); how many
        this call moved. Idempotent, and safe to run from several replicas at once or again after a
        crash. With nothing to move, one query on the `legacy_reservas` index.
        """
        pending = [doc["_id"] async for doc in self._writes.find(_LEGACY, {"_id": 1})]
        migrated = 0
        for evento_id in pending:
            doc = await self._writes.find_one({"_id": evento_id, **_LEGACY})
            if doc is None:
                continue  # migrated meanwhile by another replica
            copied = await self._copy_legacy_inventory(doc)
            if await self._retire_legacy_fields(doc):
                migrated += 1
                log.info("legacy evento migrated", extra={"evento_id": evento_id, **copied})
        if pending:
            log.info("legacy eventos migrated", extra={"migrated": migrated, "found": len(pending)})
        return migrated

    async def _copy_legacy_inventory(self, doc: Mapping[str, Any]) -> dict[str, int]:
        """Write what the old-shape event `doc` holds into `inventario`: seats, seat map, allocations, tombstones.

        Each an insert that leaves a document already there alone, in batches of at most SEAT_BATCH.
        Answers how many of each there were (for the log).
        """
        evento_id = doc["_id"]
        asientos = list(doc.get("asientos") or ())
        reservas = list(doc.get("reservas") or ())
        holders = {seat: a["reserva_id"] for a in reservas for seat in a.get("asientos") or ()}
        self._check_legacy(doc, asientos, reservas, holders)
        seats = [
            {"_id": seat_id(evento_id, label), "tipo": SEAT, "evento_id": evento_id, "asiento": label,
             "reserva_id": holders.get(label)}
            for label in asientos
        ]  # fmt: skip
        await self._insert_missing(seats)
        if asientos:
            await self._insert_missing(
                [{"_id": seat_map_id(evento_id), "tipo": SEAT_MAP, "evento_id": evento_id, "asientos": asientos}]
            )
        active = {a["reserva_id"] for a in reservas}
        allocations = [
            {"_id": allocation_id(evento_id, a["reserva_id"]), "tipo": ALLOCATION, "evento_id": evento_id,
             "reserva_id": a["reserva_id"], "cantidad": a["cantidad"], "asientos": list(a.get("asientos") or ()),
             "liberada": False}
            for a in reservas
        ] + [
            {"_id": allocation_id(evento_id, rid), "tipo": ALLOCATION, "evento_id": evento_id,
             "reserva_id": rid, "cantidad": 0, "asientos": [], "liberada": True}  # as `spend` leaves them
            for rid in dict.fromkeys(doc.get("reservas_liberadas") or ())
            if rid not in active
        ]  # fmt: skip
        await self._insert_missing(allocations)
        return {
            "seats": len(seats),
            "held_seats": len(holders),
            "allocations": len(reservas),
            "tombstones": len(allocations) - len(reservas),
        }

    async def _retire_legacy_fields(self, doc: Mapping[str, Any]) -> bool:
        """The last step: the event takes this shape, in one update, if it is still in the old one.

        False when another replica did it first.
        """
        result = await self._writes.update_one(
            {"_id": doc["_id"], **_LEGACY},
            {
                "$unset": dict.fromkeys(_LEGACY_FIELDS, ""),
                "$set": {"con_asientos": bool(doc.get("asientos")), "inventario_version": 0},
            },
        )
        return result.modified_count == 1

    async def _insert_missing(self, docs: list[dict[str, Any]]) -> None:
        """Insert `docs` in batches of SEAT_BATCH; those whose `_id` is taken already are left as stored."""
        for start in range(0, len(docs), SEAT_BATCH):
            try:
                await self._inventory.insert_many(docs[start : start + SEAT_BATCH], ordered=False)
            except BulkWriteError as error:
                details = error.details
                if details.get("writeConcernErrors") or any(
                    e.get("code") != DUPLICATE_KEY for e in details.get("writeErrors") or ()
                ):
                    raise

    @staticmethod
    def _check_legacy(
        doc: Mapping[str, Any], asientos: Sequence[str], reservas: Sequence[Mapping[str, Any]], holders: Mapping[str, str]
    ) -> None:
        """Warn (and migrate as stored) when an old-shape event's counter and seats disagree with its allocations."""
        held = sum(int(a["cantidad"]) for a in reservas)
        disponibles = set(doc.get("asientos_disponibles") or ())
        counter_ok = doc["entradas_disponibles"] + held == doc["aforo_total"]
        seats_ok = not asientos or (disponibles.isdisjoint(holders) and disponibles | set(holders) == set(asientos))
        if not (counter_ok and seats_ok):
            log.warning(
                "legacy evento inconsistent; migrated as stored",
                extra={
                    "evento_id": doc["_id"],
                    "aforo_total": doc["aforo_total"],
                    "entradas_disponibles": doc["entradas_disponibles"],
                    "held": held,
                    "seats_consistent": seats_ok,
                },
            )
