"""MongoDB client helpers. One client per process, created by the server builder, never at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TypeVar

import pymongo.lock
from pymongo import AsyncMongoClient, ReadPreference, WriteConcern
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure, PyMongoError

log = logging.getLogger(__name__)

#: Inventory and money move on the primary and are acknowledged by a majority.
MAJORITY = WriteConcern("majority")


#: Connections per process. Measured on SecantusDB (a thread per connection behind one interpreter lock):
#: 64 purchases in flight ran 25% faster through 4 connections per service than through pymongo's
#: default of 100, which let every caller into the server at once to fight there; a few connections
#: keep the queue in the client, where group commit gathers it. A real mongod may want more:
#: MONGODB_MAX_POOL_SIZE.
DEFAULT_POOL_SIZE = 4


def pool_size(env: Mapping[str, str]) -> int:
    """MONGODB_MAX_POOL_SIZE from `env` (the services' configs read it through here), DEFAULT_POOL_SIZE if unset."""
    raw = env.get("MONGODB_MAX_POOL_SIZE", "")
    try:
        size = int(raw) if raw else DEFAULT_POOL_SIZE
    except ValueError:
        raise ValueError(f"MONGODB_MAX_POOL_SIZE must be a whole number, got {raw!r}") from None
    if size < 1:
        raise ValueError(f"MONGODB_MAX_POOL_SIZE must be at least 1, got {raw!r}")
    return size


T = TypeVar("T")


async def _wait_for(awaitable: Awaitable[T], timeout: float | None) -> T:
    """`asyncio.wait_for` as Python 3.12 has it: built on `asyncio.timeout`, the awaitable runs in the caller's task."""
    async with asyncio.timeout(timeout):
        return await awaitable


def cancellation_safe_pymongo() -> None:
    """Make pymongo's asyncio client safe to cancel on Python 3.11 (idempotent; nothing to do on 3.12+).

    pymongo waits on its topology and pool conditions through `pymongo.lock._async_cond_wait`, which is
    `asyncio.wait_for(condition.wait(), timeout)`. On 3.11, wait_for runs `condition.wait()` in a task of
    its own, and when the waiting caller is cancelled while that task is still re-taking the lock after
    a timeout (CPython gh-86296, fixed in 3.12 by rebuilding wait_for on `asyncio.timeout`), the caller
    leaves without the lock: its `async with` releases a lock it does not hold ("RuntimeError: Lock is
    not acquired"), and the orphaned task takes the lock afterwards and ends holding it. Every later
    operation of that client, its health ping and its server monitor included, then waits for the
    topology lock forever. A MongoDB outage under load makes it likely: hundreds of operations wait in
    server selection, 0.5 s at a time, while gRPC cancels the handlers whose callers gave up (issue 9).
    This gives pymongo 3.12's wait_for, under which a cancelled wait re-takes the lock before it leaves.
    """
    if sys.version_info < (3, 12) and getattr(pymongo.lock, "wait_for", None) is asyncio.wait_for:
        pymongo.lock.wait_for = _wait_for


def create_client(uri: str, app_name: str, max_pool_size: int = DEFAULT_POOL_SIZE) -> AsyncMongoClient:
    cancellation_safe_pymongo()
    return AsyncMongoClient(
        uri,
        appname=app_name,
        tz_aware=True,
        serverSelectionTimeoutMS=5_000,
        connectTimeoutMS=5_000,
        retryWrites=True,
        retryReads=True,
        maxPoolSize=max_pool_size,
    )


def for_reads(collection: AsyncCollection) -> AsyncCollection:
    """The collection as seen by Get/List: a secondary may answer (eventual consistency is fine there)."""
    return collection.with_options(read_preference=ReadPreference.SECONDARY_PREFERRED)


def for_writes(collection: AsyncCollection) -> AsyncCollection:
    """The collection as seen by writes that must not be lost: primary, majority."""
    return collection.with_options(read_preference=ReadPreference.PRIMARY, write_concern=MAJORITY)


@contextlib.contextmanager
def store_errors_as(signal: Callable[[], Exception]) -> Iterator[None]:
    """pymongo's errors inside become `signal()` (the cause chained): where an adapter uses it, its callers handle
    their own signal and never pymongo's exceptions."""
    try:
        yield
    except PyMongoError as error:
        raise signal() from error


def error_summary(error: PyMongoError) -> str:
    """A MongoDB error for a log line. A failed command's message may quote stored values (a duplicate key
    prints the document's key: an e-mail, a document number), so it is told by its code and name only; an
    error of the connection (no server, a timeout) keeps its message, which names hosts, never credentials."""
    if isinstance(error, OperationFailure):  # also DuplicateKeyError, WriteError, BulkWriteError
        name = (error.details or {}).get("codeName", "")
        return f"{type(error).__name__} (code {error.code}{f' {name}' if name else ''})"
    return f"{type(error).__name__}: {error}"


#: The last failure `ping` logged for a database: one line per cause, not one per health check.
_last_failure: dict[str, str] = {}


async def ping(db: AsyncDatabase) -> bool:
    """True when the server answers a ping. A failure is logged when its cause changes (a wrong password in
    MONGODB_URI shows as AuthenticationFailed, an unreachable server as a timeout)."""
    try:
        await db.command("ping")
    except PyMongoError as error:
        summary = error_summary(error)
        if _last_failure.get(db.name) != summary:
            _last_failure[db.name] = summary
            log.warning("MongoDB does not answer", extra={"database": db.name, "error": summary})
        return False
    if _last_failure.pop(db.name, None) is not None:
        log.info("MongoDB answers again", extra={"database": db.name})
    return True
