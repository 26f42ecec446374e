"""The event store: reservations' streams in an append-only MongoDB collection.

Each document is one event `{reserva_id, version, tipo, datos, ocurrido, metadata}`.
The unique index on (reserva_id, version) is the optimistic-concurrency check: two
writers appending the same version cannot both succeed, and an append never
overwrites. Events are never updated or deleted. This module is the only one that
knows the events' document shape. Appends of concurrent sagas go to the store together
(`infra.group_commit`): one bulk write for a burst of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, IndexModel, InsertOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure, PyMongoError

from infra.errors import Unavailable
from infra.group_commit import DUPLICATE_KEY, GroupWriter
from infra.mongo import for_writes, store_errors_as
from reservas.domain import MAX_ID, ConcurrencyConflict, Event, Reserva, StoreUnavailable, Tipo

COLLECTION = "reserva_eventos"


def to_document(event: Event) -> dict[str, Any]:
    return {
        "reserva_id": event.reserva_id,
        "version": event.version,
        "tipo": str(event.tipo),
        "datos": dict(event.datos),
        "ocurrido": event.ocurrido,
        "metadata": dict(event.metadata),
    }


def from_document(doc: dict[str, Any]) -> Event:
    return Event(
        reserva_id=doc["reserva_id"],
        version=int(doc["version"]),
        tipo=Tipo(doc["tipo"]),
        datos=doc.get("datos", {}),
        ocurrido=doc["ocurrido"],
        metadata=doc.get("metadata", {}),
    )


def _version_taken(error: DuplicateKeyError | BulkWriteError) -> bool:
    """Whether a failed append collided with an event already at that version (and not something else)."""
    if isinstance(error, DuplicateKeyError):
        return True
    return any(e.get("code") == DUPLICATE_KEY for e in error.details.get("writeErrors") or ())


class EventStore:
    def __init__(self, db: AsyncDatabase) -> None:
        # Appends and the reads that decide what to append go to the primary, majority-acknowledged:
        # the write side is strongly consistent.
        self.collection = for_writes(db[COLLECTION])
        self.writer = GroupWriter(self.collection)

    async def ensure_indexes(self) -> None:
        await self.collection.create_indexes(
            [IndexModel([("reserva_id", ASCENDING), ("version", ASCENDING)], unique=True, name="stream_version")]
        )
        # No query reads by `ocurrido` alone (a stream "as of" an instant is read through stream_version), and
        # every event paid for that index's entry: measured on SecantusDB, about half the cost of an append.
        with contextlib.suppress(OperationFailure):
            await self.collection.drop_index("ocurrido")

    async def append(self, events: Sequence[Event]) -> None:
        """Append events of one stream, in order, in one write. ConcurrencyConflict if a version is taken."""
        if not events:
            return
        try:
            # Ordered, no transaction: the write stops at the first failure, so what lands is a prefix
            # of `events`, and a stream cut after any prefix is still a valid stream.
            await self.writer.write([InsertOne(to_document(e)) for e in events])
        except (DuplicateKeyError, BulkWriteError) as error:
            if not _version_taken(error):
                raise  # written but not acknowledged as asked (a write concern error): the store's trouble
            raise ConcurrencyConflict(
                f"reservation {events[0].reserva_id} changed concurrently (version {events[0].version} is taken)",
                metadata={"reserva_id": events[0].reserva_id, "version": events[0].version},
            ) from error

    async def save(self, reserva: Reserva) -> None:
        """Append the aggregate's pending events and clear them. ConcurrencyConflict when a version is taken;
        StoreUnavailable when the store does not take them (naming the reservation if an earlier save stored
        part of its stream)."""
        recorded = reserva.version > len(reserva.pending)
        with store_errors_as(lambda: StoreUnavailable.appending(reserva.id, recorded)):
            await self.append(reserva.pending)
        reserva.pending.clear()

    async def load(self, reserva_id: str, until: datetime | None = None) -> list[Event]:
        """A stream, oldest first; with `until`, only the events that had happened by then."""
        query: dict[str, Any] = {"reserva_id": reserva_id}
        if until is not None:
            query["ocurrido"] = {"$lte": until}
        cursor = self.collection.find(query, {"_id": 0}).sort("version", ASCENDING)
        return [from_document(doc) async for doc in cursor]

    async def load_page(self, reserva_id: str, after_version: int, limit: int) -> list[Event]:
        """Up to `limit` events of a stream, those after `after_version`, oldest first."""
        query = {"reserva_id": reserva_id, "version": {"$gt": after_version}}
        cursor = self.collection.find(query, {"_id": 0}).sort("version", ASCENDING).limit(limit)
        return [from_document(doc) async for doc in cursor]

    async def owner(self, reserva_id: str) -> str | None:
        """The usuario_id a reservation belongs to (from its first event); None when there is no such reservation."""
        if len(reserva_id) > MAX_ID:  # no reservation has so long an id: nothing is read for it (limits come first)
            return None
        try:
            doc = await self.collection.find_one({"reserva_id": reserva_id, "version": 1}, {"_id": 0, "datos.usuario_id": 1})
        except PyMongoError as error:
            raise Unavailable(
                "the reservations' store is not answering; try again shortly", reason="MONGODB_UNAVAILABLE"
            ) from error
        usuario_id = (doc or {}).get("datos", {}).get("usuario_id")
        return usuario_id if isinstance(usuario_id, str) else None

    async def get(self, reserva_id: str, as_of: datetime | None = None) -> Reserva | None:
        """The aggregate rebuilt from its stream (as it was at `as_of`, when given); None if it has no events.
        StoreUnavailable when the store does not answer."""
        with store_errors_as(lambda: StoreUnavailable.about(reserva_id)):
            events = await self.load(reserva_id, until=as_of)
        return Reserva.replay(events)
