"""Reading the write side for the projector: whole streams, in bulk, from the event store.

The projector never trusts an event on its own: for every reservation it is told about it
rebuilds the state from the reservation's whole stream (`Reserva.replay`), so it does not matter
how often or in which order it hears about the events. Reads go to the primary, like the write
side's own, so a stream announced by the change stream is there in full.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

from bson import Timestamp
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from reservas.domain import Event, Reserva
from reservas.event_store import EventStore, from_document
from reservas.projections.read_models import chunks

STREAM_ORDER = [("reserva_id", ASCENDING), ("version", ASCENDING)]


class StreamSource:
    def __init__(self, db: AsyncDatabase) -> None:
        self.db = db
        self.store = EventStore(db)

    async def _complete(self, reserva_id: str, events: list[Event]) -> Reserva | None:
        """The state of a stream read by a scan; if the scan saw a gap (an append raced it), reload it."""
        if any(e.version != i for i, e in enumerate(events, start=1)):
            events = await self.store.load(reserva_id)
        return Reserva.replay(events)

    async def _grouped(self, query: dict[str, Any], batch_size: int) -> AsyncIterator[tuple[str, list[Event]]]:
        cursor = self.store.collection.find(query, {"_id": 0}, batch_size=batch_size).sort(STREAM_ORDER)
        current: str | None = None
        events: list[Event] = []
        async for doc in cursor:
            event = from_document(doc)
            if event.reserva_id != current:
                if current is not None:
                    yield current, events
                current, events = event.reserva_id, []
            events.append(event)
        if current is not None:
            yield current, events

    async def load(self, reserva_ids: Sequence[str]) -> list[Reserva]:
        """The current state of these reservations (those with no events are left out).

        The streams are put in order here, not by the server: on SecantusDB an `$in` sorted by the
        stream index costs nearly twice the same query unsorted, and more as the store grows.
        """
        reservas = []
        for ids in chunks(list(reserva_ids)):
            streams: dict[str, list[Event]] = {}
            async for doc in self.store.collection.find({"reserva_id": {"$in": ids}}, {"_id": 0}, batch_size=1000):
                event = from_document(doc)
                streams.setdefault(event.reserva_id, []).append(event)
            for reserva_id, events in streams.items():
                events.sort(key=lambda e: e.version)
                reserva = await self._complete(reserva_id, events)
                if reserva is not None:
                    reservas.append(reserva)
        return reservas

    async def count_streams(self) -> int:
        """How many reservations the event store holds (every stream has exactly one version 1)."""
        return await self.store.collection.count_documents({"version": 1})

    async def scan(self, batch: int = 200) -> AsyncIterator[list[Reserva]]:
        """Every reservation's current state, `batch` at a time, in one pass over the stream index."""
        reservas: list[Reserva] = []
        async for reserva_id, events in self._grouped({}, 2000):
            reserva = await self._complete(reserva_id, events)
            if reserva is not None:
                reservas.append(reserva)
            if len(reservas) >= batch:
                yield reservas
                reservas = []
        if reservas:
            yield reservas


async def current_position(db: AsyncDatabase) -> dict[str, Any]:
    """A change-stream position at "now": a stream resumed from it delivers every event appended
    after it, and a scan started after this returns every event appended before it.

    It is the resume token of a change stream just opened (its post-batch token), which resumes
    at once on any server; `startAtOperationTime` is the fallback for a server that gives none
    (SecantusDB takes seconds to place it on a long oplog, so it is avoided).
    """
    async with await EventStore(db).collection.watch([{"$match": {"operationType": "insert"}}]) as stream:
        token = stream.resume_token
    if token is not None:
        return {"resume_token": token}
    return {"start_at": await cluster_time(db)}


async def cluster_time(db: AsyncDatabase) -> Timestamp:
    """The database's current operation time: a change stream started at it misses nothing after it."""
    reply = await db.command("ping")
    ts = reply.get("operationTime") or reply.get("$clusterTime", {}).get("clusterTime")
    if ts is None:
        hello = await db.command("hello")
        ts = hello["lastWrite"]["opTime"]["ts"]
    return ts


def wall_time(change: dict[str, Any]) -> datetime:
    """When a change happened, by the database's clock (`wallTime`, or the cluster time's seconds)."""
    wall = change.get("wallTime")
    if isinstance(wall, datetime):
        return wall if wall.tzinfo else wall.replace(tzinfo=UTC)
    return change["clusterTime"].as_datetime()
