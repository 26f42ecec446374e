"""The projector: keeps the read models up to date from the event store, asynchronously.

It follows a MongoDB change stream on `reserva_eventos` (inserts only) and, for every
reservation an event names, rebuilds that reservation's state from its whole stream and applies
it (`ReadModels.apply`: version-guarded, one transaction with the statistics' delta). So an event
delivered twice, late, or to two projectors at once changes nothing more.

Durable checkpoint (`checkpoint.py`): after each batch it saves the change stream's resume
token and the instant the read models are current to; a restart resumes from the token. With no
checkpoint it builds the models first (catch-up scan, then follow from the stream position captured
before the scan); a resume token that fell off the oplog leads to a full rebuild, logged. While a
rebuild runs, projectors wait for its checkpoint. Each projector runs its transactions on one
registered session, so a successor on the same host can abort the one a killed projector left open.

Poison events (`poison.py`): a stream the read models cannot take (an `$inc` that overflows, an event the
aggregate cannot read) is retried a few times, then set aside in the dead letters with its error, logged once
and skipped: the other streams of its batch are applied and the checkpoint moves on. The store being down is
not poison: that is retried, from the checkpoint, until the store answers.

Runs inside the reservas process by default (`ProjectorTask`) or on its own (`eventflow projector`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure, PyMongoError

from infra.mongo import error_summary
from reservas.projections.checkpoint import Checkpoint, Checkpoints, RebuildConflict, SessionRegistry, now
from reservas.projections.dead_letters import DeadLetters
from reservas.projections.poison import PoisonGuard
from reservas.projections.read_models import ReadModels
from reservas.projections.rebuild import rebuild
from reservas.projections.source import StreamSource, wall_time

log = logging.getLogger(__name__)

#: mongod's (and SecantusDB's) answers when a resume point is no longer in the oplog:
#: ChangeStreamHistoryLost, ChangeStreamFatalError, CappedPositionLost.
HISTORY_LOST = frozenset({286, 280, 136})

PIPELINE: list[dict[str, Any]] = [
    {"$match": {"operationType": "insert"}},
    {"$project": {"operationType": 1, "clusterTime": 1, "wallTime": 1, "fullDocument.reserva_id": 1}},
]


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Projector:
    def __init__(
        self,
        db: AsyncDatabase,
        *,
        owner: str | None = None,
        max_await_ms: int = 250,
        max_batch: int = 500,
        batch_window: float = 0.2,
        checkpoint_every: float = 0.3,
        stale_after: float = 30.0,
        retry_delay: float = 0.5,
        poison_attempts: int = 3,
        poison_backoff: float = 0.1,
    ) -> None:
        self.db = db
        self.owner = owner or default_owner()
        self.max_await_ms = max_await_ms
        self.max_batch = max_batch
        self.batch_window = batch_window
        self.checkpoint_every = checkpoint_every
        self.stale_after = stale_after
        self.retry_delay = retry_delay
        self.models = ReadModels(db)
        self.checkpoints = Checkpoints(db)
        self.source = StreamSource(db)
        self.guard = PoisonGuard(
            self.models, self.source, DeadLetters(db), by=self.owner, attempts=poison_attempts, backoff=poison_backoff
        )
        #: Observability: changes received and the instant the models were last known current to.
        self.changes_seen = 0
        self.current_to: datetime | None = None
        self._queue: asyncio.Queue[_Item] | None = None  # what was read from the change stream, not applied yet

    @property
    def dead_lettered(self) -> int:
        """Observability: how many times a stream was set aside as a dead letter (`poison.py`)."""
        return self.guard.dead_lettered

    @property
    def behind(self) -> int:
        """Observability: changes read from the store's change stream and not applied yet (polls included)."""
        return 0 if self._queue is None else self._queue.qsize()

    async def run(self) -> None:
        """Follow the event store until cancelled; errors are logged and retried with backoff."""
        delay = self.retry_delay
        started = False
        # One session for all of this projector's transactions (one at a time), registered so that a
        # successor can abort a transaction this process leaves open if it is killed.
        self.models.session = self.db.client.start_session()
        sessions = SessionRegistry(self.db, self.owner)
        try:
            while True:
                try:
                    if not started:
                        await self.models.ensure_indexes()
                        if reaped := await sessions.reap():
                            log.info("aborted the open transactions of dead projectors", extra={"sessions": reaped})
                        await sessions.register(self.models.session)
                        started = True
                    await self.run_once()
                    delay = self.retry_delay
                except RebuildConflict as conflict:  # another projector or a rebuild got there first
                    log.info("waiting for another rebuild", extra={"detail": str(conflict)})
                    await asyncio.sleep(self.retry_delay)
                except (PyMongoError, OSError) as error:  # the store's trouble (poison.is_transient)
                    log.warning(
                        "projector: database error, retrying", extra={"error": error_summary(error), "delay": delay}
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
                except Exception:
                    log.exception("projector failed, restarting")
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
        finally:
            with contextlib.suppress(Exception):
                await sessions.unregister()
            with contextlib.suppress(Exception):
                await self.models.session.end_session()
            self.models.session = None

    async def run_once(self) -> None:
        """Build the models if there is no position to follow from, else follow the change stream
        until the checkpoint's generation changes (a rebuild) or the stream ends."""
        checkpoint = await self.checkpoints.load()
        if checkpoint is None or checkpoint.position is None:
            if checkpoint is not None and checkpoint.rebuilding(self.stale_after):
                await asyncio.sleep(self.retry_delay)  # a rebuild is running: wait for its checkpoint
                return
            if checkpoint is not None:
                log.warning("a rebuild stopped half-way (no heartbeat): rebuilding the read models")
            # First start, or an abandoned rebuild (cleared again: it may have been half-applied).
            await rebuild(self.db, owner=self.owner, clear=checkpoint is not None, expected=checkpoint, guard=self.guard)
            return
        try:
            await self.follow(checkpoint)
        except OperationFailure as error:
            if error.code not in HISTORY_LOST:
                raise
            log.warning(
                "the checkpoint's resume point is no longer in the oplog: rebuilding the read models",
                extra={"error": error_summary(error), "generation": checkpoint.generation},
            )
            await rebuild(self.db, owner=self.owner, clear=True, expected=checkpoint, guard=self.guard)

    async def follow(self, checkpoint: Checkpoint) -> None:
        """Follow the change stream from the checkpoint until a rebuild starts a new generation.

        A reader task polls the stream into a queue; the applier takes everything queued within
        `batch_window` of the first event (so a burst is applied in batches, and a lone event after
        that short wait), applies it, then saves the position of the
        last item it applied. An empty poll queues a marker: once the applier reaches it, every event
        before that poll started is applied, so the models are current as of the poll's start.
        """
        position = checkpoint.position or {}
        options: dict[str, Any] = (
            {"resume_after": position["resume_token"]}
            if position.get("resume_token")
            else {"start_at_operation_time": position["start_at"]}
        )
        stream = await self.source.store.collection.watch(PIPELINE, max_await_time_ms=self.max_await_ms, **options)
        log.info(
            "projector following the event store",
            extra={"generation": checkpoint.generation, "from": next(iter(options)), "owner": self.owner},
        )
        queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=self.max_batch * 4)
        self._queue = queue
        async with stream:
            reader = asyncio.create_task(self._read(stream, queue), name="projector-reader")
            applier = asyncio.create_task(self._apply(queue, checkpoint.generation), name="projector-applier")
            try:
                done, _ = await asyncio.wait({reader, applier}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (reader, applier):
                    task.cancel()
                await asyncio.gather(reader, applier, return_exceptions=True)
            for task in done:
                task.result()  # re-raise a failure (for example a resume point lost from the oplog)

    async def _read(self, stream: AsyncChangeStream[Any], queue: asyncio.Queue[_Item]) -> None:
        while stream.alive:
            polled = now()
            change = await stream.try_next()
            if change is None:
                await queue.put(_Item(None, stream.resume_token, polled))
                continue
            reserva_id = (change.get("fullDocument") or {}).get("reserva_id")
            if reserva_id is None:  # no stream to project; what came before it is applied once this is reached
                log.error("an event with no reserva_id belongs to no reservation: skipped")
            await queue.put(_Item(reserva_id, stream.resume_token, wall_time(change)))

    async def _apply(self, queue: asyncio.Queue[_Item], generation: int) -> None:
        saved = 0.0
        while True:
            items = [await queue.get()]
            if items[0].reserva_id is not None and self.batch_window > 0:
                # A purchase appends its events in two or three writes a few ms apart, and a burst
                # many more: waiting a moment applies them together (one read of the streams, one
                # transaction) instead of one round of reads and writes per append.
                await asyncio.sleep(self.batch_window)
            while not queue.empty() and len(items) < self.max_batch:
                items.append(queue.get_nowait())
            ids = list(dict.fromkeys(i.reserva_id for i in items if i.reserva_id is not None))
            if ids:
                await self.guard.project(ids)  # sets aside what cannot be applied (poison.py): never stalls
                self.changes_seen += sum(i.reserva_id is not None for i in items)
            last = items[-1]
            # At most every `checkpoint_every` seconds, unless the models just caught up with the stream
            # (then at once, so actualizado_hasta moves): under load a write per batch would cost as much
            # as the batch, and a restart re-applies what came after the checkpoint at no harm (the views
            # are version-guarded). When quiet, an empty poll can return at once (any write to the
            # database, our own checkpoint included, may wake it): a write per poll would feed itself.
            caught_up = bool(ids) and queue.empty()
            if last.resume_token is None or (not caught_up and time.monotonic() - saved < self.checkpoint_every):
                continue
            if not await self.checkpoints.advance(generation, last.resume_token, last.hasta, self.owner):
                log.info("the read models were rebuilt: following the new checkpoint")
                return
            saved = time.monotonic()
            self.current_to = last.hasta


@dataclass(frozen=True)
class _Item:
    """One poll's outcome: an event of `reserva_id` (None: nothing new), the stream position after it,
    and the instant the models are current to once it is applied."""

    reserva_id: str | None
    resume_token: dict[str, Any] | None
    hasta: datetime


class ProjectorTask:
    """The projector as a background task of a process (the reservas server, or `eventflow projector`)."""

    def __init__(self, db: AsyncDatabase, **options: Any) -> None:
        self.projector = Projector(db, **options)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> ProjectorTask:
        if self.task is None:
            self.task = asyncio.create_task(self.projector.run(), name="projector")
        return self

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
