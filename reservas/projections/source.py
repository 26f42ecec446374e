"""Reading the write side for the projector: whole streams, in bulk, from the event store.

The projector never trusts an event on its own: for every reservation it is told about it
rebuilds the state from the reservation's whole stream (`Reserva.replay`), so it does not matter
how often or in which order it hears about the events. Reads go to the primary, like the write
side's own, so a stream announced by the change stream is there in full.

A stream whose events cannot be replayed (a document the aggregate cannot read: a missing field, a
value of the wrong type, an unknown event type) does not stop a read of many: it comes back as a
`StreamFailure` naming the first such event, in place of its state (see `dead_letters.py`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bson import Timestamp
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from reservas.domain import Event, Reserva
from reservas.event_store import EventStore, from_document
from reservas.projections.read_models import chunks

log = logging.getLogger(__name__)

STREAM_ORDER = [("reserva_id", ASCENDING), ("version", ASCENDING)]


@dataclass(frozen=True)
class StreamFailure:
    """Why a stream could not be projected: the event it stopped at (version and type) and the error.
    `tipo` is None while the event is not located yet (a state the read models refused as a whole)."""

    reserva_id: str
    version: int
    tipo: str | None
    error: Exception


def _version(doc: dict[str, Any]) -> int:
    try:
        return int(doc["version"])
    except (KeyError, TypeError, ValueError):
        return 0


def replay(reserva_id: str, docs: Sequence[dict[str, Any]]) -> Reserva | StreamFailure | None:
    """The state after these event documents (oldest first); None for none. If an event cannot be read
    or applied, the failure of the first such one instead (any error: bad data, or a bug of ours)."""
    events: list[Event] = []
    for doc in docs:
        try:
            events.append(from_document(doc))
        except Exception as error:  # noqa: BLE001 - whatever it is, this stream cannot be read
            return StreamFailure(reserva_id, _version(doc), str(doc.get("tipo", "")), error)
    try:
        return Reserva.replay(events)
    except Exception:  # noqa: BLE001 - located below, one prefix at a time (rare: only broken streams)
        pass
    for k, event in enumerate(events, start=1):
        try:
            Reserva.replay(events[:k])
        except Exception as error:  # noqa: BLE001
            return StreamFailure(reserva_id, event.version, str(event.tipo), error)
    raise AssertionError("a stream that fails as a whole fails at some prefix")  # pragma: no cover


class StreamSource:
    def __init__(self, db: AsyncDatabase) -> None:
        self.db = db
        self.store = EventStore(db)

    async def _documents(self, reserva_id: str) -> list[dict[str, Any]]:
        cursor = self.store.collection.find({"reserva_id": reserva_id}, {"_id": 0}).sort("version", ASCENDING)
        return [doc async for doc in cursor]

    async def _complete(self, reserva_id: str, docs: list[dict[str, Any]]) -> Reserva | StreamFailure | None:
        """The state of a stream read by a scan; if the scan saw a gap (an append raced it), reload it."""
        if any(_version(doc) != i for i, doc in enumerate(docs, start=1)):
            docs = await self._documents(reserva_id)
        return replay(reserva_id, docs)

    async def _grouped(
        self, query: dict[str, Any], batch_size: int
    ) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
        cursor = self.store.collection.find(query, {"_id": 0}, batch_size=batch_size).sort(STREAM_ORDER)
        current: str | None = None
        docs: list[dict[str, Any]] = []
        async for doc in cursor:
            reserva_id = doc.get("reserva_id")
            if reserva_id is None:
                log.error("an event with no reserva_id belongs to no reservation: skipped", extra={"tipo": doc.get("tipo")})
                continue
            if reserva_id != current:
                if current is not None:
                    yield current, docs
                current, docs = reserva_id, []
            docs.append(doc)
        if current is not None:
            yield current, docs

    async def load(self, reserva_ids: Sequence[str]) -> list[Reserva | StreamFailure]:
        """The current state of these reservations, or why a stream cannot be replayed (those with no events
        are left out).

        The streams are put in order here, not by the server: on SecantusDB an `$in` sorted by the
        stream index costs nearly twice the same query unsorted, and more as the store grows.
        """
        reservas: list[Reserva | StreamFailure] = []
        for ids in chunks(list(reserva_ids)):
            streams: dict[str, list[dict[str, Any]]] = {}
            async for doc in self.store.collection.find({"reserva_id": {"$in": ids}}, {"_id": 0}, batch_size=1000):
                streams.setdefault(doc["reserva_id"], []).append(doc)
            for reserva_id, docs in streams.items():
                docs.sort(key=_version)
                reserva = await self._complete(reserva_id, docs)
                if reserva is not None:
                    reservas.append(reserva)
        return reservas

    async def steps(self, reserva_id: str) -> tuple[list[tuple[str, Reserva]], StreamFailure | None]:
        """The stream replayed one event at a time: each event's type and the state after it, up to the
        first event that cannot be replayed, and that one's failure (None: every event replays)."""
        docs = await self._documents(reserva_id)
        done: list[tuple[str, Reserva]] = []
        for k, doc in enumerate(docs, start=1):
            state = replay(reserva_id, docs[:k])
            if isinstance(state, StreamFailure):
                return done, state
            assert state is not None
            done.append((str(doc.get("tipo", "")), state))
        return done, None

    async def count_streams(self) -> int:
        """How many reservations the event store holds (every stream has exactly one version 1)."""
        return await self.store.collection.count_documents({"version": 1})

    async def scan(self, batch: int = 200) -> AsyncIterator[list[Reserva | StreamFailure]]:
        """Every reservation's current state (or why it cannot be replayed), `batch` at a time, in one
        pass over the stream index."""
        reservas: list[Reserva | StreamFailure] = []
        async for reserva_id, docs in self._grouped({}, 2000):
            reserva = await self._complete(reserva_id, docs)
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
