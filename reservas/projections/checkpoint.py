"""The projector's durable checkpoint: where to resume reading and how current the read models are.

One document per projection in `proyecciones_checkpoint`:
`{_id, generation, position, hasta, rebuild, updated, by}` where
- `position` is `{"resume_token": <change stream token>}` (or `{"start_at": <cluster Timestamp>}`
  on a server whose change streams give no initial token), None while the models are (re)built;
- `hasta` is the instant up to which every event is reflected in the read models (None while
  rebuilding): it only moves forward within a generation;
- `generation` changes with every (re)build: a projector whose generation is no longer current
  stops writing the checkpoint and starts again from the new one;
- `rebuild` is `{owner, heartbeat}` while a (re)build runs, so others wait for it, or take over
  if its heartbeat stops.

Several projectors may share the checkpoint: each only moves it forward, and anything any of them
saved was applied by that one first. The same collection records each projector's transaction
session (`SessionRegistry`, documents `{_id: "session:<owner>", kind: "session", ...}`).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from infra.mongo import for_reads, for_writes

log = logging.getLogger(__name__)

COLLECTION = "proyecciones_checkpoint"
NAME = "reservas"


def now() -> datetime:
    return datetime.now(UTC)


class RebuildConflict(Exception):
    """Someone else claimed the (re)build first, or took it over from us."""


@dataclass(frozen=True)
class Checkpoint:
    generation: int
    position: dict[str, Any] | None
    hasta: datetime | None
    rebuild_owner: str | None
    rebuild_heartbeat: datetime | None

    def rebuilding(self, stale_after: float, at: datetime | None = None) -> bool:
        """A (re)build is running and alive (its heartbeat is recent)."""
        if self.rebuild_owner is None or self.rebuild_heartbeat is None:
            return False
        return (at or now()) - self.rebuild_heartbeat < timedelta(seconds=stale_after)


class Checkpoints:
    def __init__(self, db: AsyncDatabase, name: str = NAME) -> None:
        self.name = name
        self.collection = for_writes(db[COLLECTION])
        self.reads = for_reads(db[COLLECTION])

    async def load(self) -> Checkpoint | None:
        doc = await self.collection.find_one({"_id": self.name})
        if doc is None:
            return None
        rebuild = doc.get("rebuild") or {}
        return Checkpoint(
            generation=int(doc["generation"]),
            position=doc.get("position"),
            hasta=doc.get("hasta"),
            rebuild_owner=rebuild.get("owner"),
            rebuild_heartbeat=rebuild.get("heartbeat"),
        )

    async def hasta(self, session: AsyncClientSession | None = None) -> datetime | None:
        """How current the read models are (for the queries; may be read from a secondary)."""
        doc = await self.reads.find_one({"_id": self.name}, {"hasta": 1}, session=session)
        return doc.get("hasta") if doc else None

    async def claim_rebuild(self, expected: Checkpoint | None, owner: str) -> int:
        """Start a (re)build: a new generation with no position and no `hasta`. Exactly one of several
        claimants that saw the same `expected` checkpoint wins; the others get RebuildConflict."""
        at = now()
        fields = {"position": None, "hasta": None, "rebuild": {"owner": owner, "heartbeat": at}, "updated": at, "by": owner}
        if expected is None:
            try:
                await self.collection.insert_one({"_id": self.name, "generation": 1, **fields})
            except DuplicateKeyError:
                raise RebuildConflict("another projector started first") from None
            return 1
        generation = expected.generation + 1
        result = await self.collection.update_one(
            {"_id": self.name, "generation": expected.generation}, {"$set": {"generation": generation, **fields}}
        )
        if result.matched_count == 0:
            raise RebuildConflict("the checkpoint changed meanwhile")
        return generation

    async def heartbeat(self, generation: int, owner: str) -> None:
        result = await self.collection.update_one(
            {"_id": self.name, "generation": generation, "rebuild.owner": owner},
            {"$set": {"rebuild.heartbeat": now()}},
        )
        if result.matched_count == 0:
            raise RebuildConflict("another rebuild took over")

    async def abandon_rebuild(self, generation: int, owner: str) -> None:
        """Our (re)build stops unfinished: let a projector or the next rebuild take over at once."""
        await self.collection.update_one(
            {"_id": self.name, "generation": generation, "rebuild.owner": owner},
            {"$set": {"rebuild.heartbeat": datetime(1970, 1, 1, tzinfo=UTC)}},
        )

    async def finish_rebuild(self, generation: int, owner: str, position: dict[str, Any], hasta: datetime) -> None:
        """The models reflect everything up to `hasta`: follow the event store from `position` on."""
        result = await self.collection.update_one(
            {"_id": self.name, "generation": generation, "rebuild.owner": owner},
            {"$set": {"position": position, "hasta": hasta, "rebuild": None, "updated": now()}},
        )
        if result.matched_count == 0:
            raise RebuildConflict("another rebuild took over")

    async def advance(self, generation: int, resume_token: dict[str, Any], hasta: datetime, owner: str) -> bool:
        """Save a later position; False when the generation is no longer current (a rebuild happened)."""
        result = await self.collection.update_one(
            {
                "_id": self.name,
                "generation": generation,
                "rebuild": None,
                "hasta": {"$lt": hasta},
            },
            {"$set": {"position": {"resume_token": resume_token}, "hasta": hasta, "updated": now(), "by": owner}},
        )
        if result.matched_count:
            return True
        current = await self.load()
        # Not ours to write: another projector of this generation is already further (fine), or a
        # rebuild started a new generation (stop and start again from it).
        return current is not None and current.generation == generation and current.rebuild_owner is None


#: Projectors running in this process (several may, in tests).
_LIVE_OWNERS: set[str] = set()


def _process_gone(owner: str, pid: int) -> bool:
    """Whether the projector `owner` (of process `pid` on this host) is dead. Our own pid but not one
    of our projectors: a predecessor we replaced (a restarted container's processes are all pid 1)."""
    if pid == os.getpid():
        return owner not in _LIVE_OWNERS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class SessionRegistry:
    """The session each projector runs its transactions on, recorded beside the checkpoint.

    A projector killed mid-transaction leaves it open on the server, holding the documents it wrote
    until the server gives up on it (transactionLifetimeLimitSeconds, 60 s by default): meanwhile
    its successor's transactions on them conflict and retry. A projector starting on the same host
    aborts its dead predecessors' sessions (`killSessions`) instead of waiting; elsewhere, the
    server's limit still applies.
    """

    def __init__(self, db: AsyncDatabase, owner: str) -> None:
        self.db = db
        self.owner = owner
        self.host = socket.gethostname()
        self.collection = for_writes(db[COLLECTION])

    async def register(self, session: AsyncClientSession) -> None:
        _LIVE_OWNERS.add(self.owner)
        await self.collection.replace_one(
            {"_id": f"session:{self.owner}"},
            {"kind": "session", "host": self.host, "pid": os.getpid(), "lsid": session.session_id, "at": now()},
            upsert=True,
        )

    async def unregister(self) -> None:
        _LIVE_OWNERS.discard(self.owner)
        await self.collection.delete_one({"_id": f"session:{self.owner}"})

    async def reap(self) -> int:
        """Abort the sessions of dead projectors of this host; how many."""
        reaped = 0
        async for doc in self.collection.find({"kind": "session", "host": self.host}):
            owner = str(doc["_id"]).removeprefix("session:")
            if owner == self.owner or not _process_gone(owner, int(doc["pid"])):
                continue
            try:
                await self.db.client.admin.command("killSessions", [doc["lsid"]])
            except PyMongoError:
                log.warning("could not abort a dead projector's session", exc_info=True)
                continue
            await self.collection.delete_one({"_id": doc["_id"]})
            reaped += 1
        return reaped
