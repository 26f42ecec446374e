"""Group commit: concurrent callers' writes to one collection, coalesced into one bulk write.

A burst of purchases would otherwise send one write per saga step each, and at 64 in flight the
store spends its time arbitrating 64 writers. `GroupWriter.write(ops)` queues the caller's
operations and waits for their outcome. While a bulk write is in flight, the callers that arrive
queue up and go together in the next one; an idle writer sends at once, so a lone caller waits
for nothing (no timer, no added latency at low load).

Every bulk write is ordered, so it stops at the first operation that fails:
- callers whose operations all came before it succeeded;
- the caller that owns it gets the error as its own: `DuplicateKeyError` for a duplicate key,
  `WriteError` otherwise, as a single write would raise (its operations before that one were
  applied: for an append of events, a prefix of the stream);
- callers after it were not attempted and go in the next bulk write.
Any other error (the store is down, a timeout) reaches every caller of that bulk write, whose
operations may or may not have been applied, exactly as with a write of their own.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo import DeleteOne, InsertOne, ReplaceOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError, WriteError

WriteOp = InsertOne[Any] | UpdateOne | ReplaceOne[Any] | DeleteOne

DUPLICATE_KEY = 11000


@dataclass
class _Pending:
    ops: list[WriteOp]
    outcome: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def resolve(self, error: BaseException | None = None) -> None:
        if self.outcome.done():  # the caller was cancelled meanwhile
            return
        if error is None:
            self.outcome.set_result(None)
        else:
            self.outcome.set_exception(error)


def _own_error(write_error: dict[str, Any]) -> WriteError:
    """What a single write would have raised for this failed operation of a bulk write."""
    code = int(write_error.get("code", 0))
    cls = DuplicateKeyError if code == DUPLICATE_KEY else WriteError
    return cls(write_error.get("errmsg", "write failed"), code, write_error)


class GroupWriter:
    """Coalesces concurrent writes to `collection` (use its write concern) into ordered bulk writes."""

    def __init__(self, collection: AsyncCollection[Any], *, max_ops: int = 1000) -> None:
        if max_ops < 1:
            raise ValueError(f"max_ops must be at least 1, got {max_ops}")
        self.collection = collection
        self.max_ops = max_ops
        self._queue: deque[_Pending] = deque()
        self._flusher: asyncio.Task[None] | None = None
        #: Observability: bulk writes sent, and operations they carried.
        self.bulk_writes = 0
        self.operations = 0

    async def write(self, ops: Sequence[WriteOp]) -> None:
        """Apply `ops` in order, together with whatever other callers are writing now."""
        if not ops:
            return
        pending = _Pending(list(ops))
        self._queue.append(pending)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name=f"group-commit-{self.collection.name}")
        await pending.outcome

    def _next_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        size = 0
        while self._queue and (not batch or size + len(self._queue[0].ops) <= self.max_ops):
            pending = self._queue.popleft()
            if pending.outcome.done():  # cancelled before it was sent: nothing to write
                continue
            batch.append(pending)
            size += len(pending.ops)
        return batch

    async def _flush(self) -> None:
        while self._queue:
            batch = self._next_batch()
            if not batch:
                continue
            try:
                await self.collection.bulk_write([op for p in batch for op in p.ops], ordered=True)
            except BulkWriteError as error:
                self._settle_partial(batch, error)
            except asyncio.CancelledError:  # shutting down: no caller is left waiting for a write never sent
                for pending in [*batch, *self._queue]:
                    pending.outcome.cancel()
                self._queue.clear()
                raise
            except Exception as error:  # noqa: BLE001 - every caller of this write gets it as its own
                for pending in batch:
                    pending.resolve(error)
            else:
                for pending in batch:
                    pending.resolve()
            finally:
                self.bulk_writes += 1
                self.operations += sum(len(p.ops) for p in batch)

    def _settle_partial(self, batch: list[_Pending], error: BulkWriteError) -> None:
        write_errors = error.details.get("writeErrors") or []
        if not write_errors:  # a write concern error: applied, but not acknowledged as asked
            for pending in batch:
                pending.resolve(error)
            return
        failed = write_errors[0]
        index = int(failed["index"])
        start = 0
        retry: list[_Pending] = []
        for pending in batch:
            end = start + len(pending.ops)
            if end <= index:
                pending.resolve()
            elif start <= index:
                pending.resolve(_own_error({**failed, "index": index - start}))
            else:
                retry.append(pending)  # not attempted: first in the next bulk write
            start = end
        self._queue.extendleft(reversed(retry))
