"""The sessions eventos writes its transactions on, recorded so that the next process can end the ones a
killed process left open.

A transaction whose process is killed stays open on the server, which cannot tell a dead client from a
slow one, until `transactionLifetimeLimitSeconds` (60 s on mongod and SecantusDB), and closing the
connection does not end it. Meanwhile every take and give-back of its event meets a write conflict: the
event can be neither sold nor given back for a minute (issue 9, eventos killed under load). The id of
its session is all it takes to end it (`killSessions`, which any user may run on sessions of its own).

So eventos runs its write transactions on a fixed pool of explicit sessions, and records their ids in
`sesiones`, one document per process (`{_id: process, sesiones: [lsid...], desde}`). A process that
starts, before it writes anything (`start`: before the service reports SERVING, or at its first write
transaction if one comes sooner), ends the
sessions of every other record and deletes those records, then records its own; one that stops
gracefully ends its sessions and deletes its record. A transaction of an eventos process still running
that is ended this way fails with a transient error, which `with_transaction` retries; that process's
record is gone, though, so if it is killed later its open transaction waits for the lifetime, as before
(several eventos processes on one database are not a deployment EventFlow describes).

The read-only snapshot transactions (an event with its seats) take no write lock and stay on implicit
sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from infra.mongo import for_writes

log = logging.getLogger(__name__)

COLLECTION = "sesiones"
#: Write transactions at once; one event has one at a time (eventos.repository's per-event lock).
POOL_SIZE = 16


class TransactionSessions:
    def __init__(self, db: AsyncDatabase, size: int = POOL_SIZE) -> None:
        if size < 1:
            raise ValueError(f"a pool of sessions needs at least one, got {size}")
        self._client = db.client
        self._records = for_writes(db[COLLECTION])
        self._size = size
        self._sessions: list[AsyncClientSession] = []
        self._free: asyncio.Queue[AsyncClientSession] = asyncio.Queue()
        self._starting = asyncio.Lock()
        self._ready = False
        #: This process, as the owner of a record.
        self.process = uuid.uuid4().hex

    async def start(self) -> int:
        """End the sessions other processes recorded (their open transactions with them), then record this
        process's; how many sessions were ended. Idempotent: once it has succeeded, later calls do nothing."""
        async with self._starting:
            return 0 if self._ready else await self._start()

    async def _start(self) -> int:
        others = [doc async for doc in self._records.find({"_id": {"$ne": self.process}})]
        ended = [{"id": lsid} for doc in others for lsid in doc.get("sesiones", [])]
        if ended:
            await self._client.admin.command("killSessions", ended)
            await self._records.delete_many({"_id": {"$in": [doc["_id"] for doc in others]}})
            log.info("ended the sessions of earlier eventos processes", extra={"procesos": len(others), "sesiones": len(ended)})
        if not self._sessions:
            self._sessions = [self._client.start_session() for _ in range(self._size)]
        record = {"sesiones": [session.session_id["id"] for session in self._sessions], "desde": datetime.now(UTC)}
        await self._records.replace_one({"_id": self.process}, record, upsert=True)
        for session in self._sessions:
            self._free.put_nowait(session)
        self._ready = True
        return len(ended)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncClientSession]:
        """A recorded session of this process, for one write transaction (`start` first, if nothing has)."""
        if not self._ready:
            await self.start()
        session = await self._free.get()
        try:
            yield session
        finally:
            self._free.put_nowait(session)

    async def close(self) -> None:
        """End this process's sessions and delete its record (a graceful stop leaves nothing to end)."""
        if not self._ready:
            return
        self._ready = False
        for session in self._sessions:
            await session.end_session()
        self._sessions = []
        with contextlib.suppress(PyMongoError):  # the store may be gone: the next process ends them anyway
            await self._records.delete_one({"_id": self.process})
