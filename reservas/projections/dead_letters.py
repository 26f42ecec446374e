"""The dead letters: reservations whose stream the read models could not take, set aside with why.

One document per reservation in `proyecciones_dead_letters` (reservas' database), the only module that knows
its shape: `{_id: reserva_id, reserva_id, version, tipo, error: {type, message}, first_failure, last_failure,
attempts, by}`, where `version` and `tipo` name the event the stream stopped at (its view holds the state just
before it; see `poison.py`), `error` is the last failure, `attempts` how many times it was tried in all, and
`by` who tried last (a projector, a rebuild, a replay).

`eventflow projections dead-letters` lists them; `eventflow projections replay-dead-letters` tries them again
and removes those that apply.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, OperationFailure, PyMongoError

from infra.mongo import error_summary, for_writes
from reservas.projections.checkpoint import now
from reservas.projections.read_models import chunks
from reservas.projections.source import StreamFailure

COLLECTION = "proyecciones_dead_letters"

#: An error's message is kept this long at most (a stack of nested causes can be long).
MAX_MESSAGE = 2000


def _first_write_error(error: BaseException) -> dict[str, Any]:
    """A refused bulk write's first refused operation ({} if none was: only the write concern failed)."""
    if isinstance(error, BulkWriteError):
        return next(iter(error.details.get("writeErrors") or ()), {})
    return {}


def describe(error: BaseException) -> tuple[str, str]:
    """An error's type and message, as a dead letter keeps them. For a refused write, the server's own
    message for the first refused operation (not the whole reply, which quotes every operation sent)."""
    message = str(error)
    if first := _first_write_error(error):
        message = f"code {first.get('code')}: {first.get('errmsg', '')}"
    elif isinstance(error, OperationFailure):
        message = f"code {error.code}: {(error.details or {}).get('errmsg', message)}"
    return type(error).__name__, message[:MAX_MESSAGE]


def summary(error: BaseException) -> str:
    """An error for a log line: a MongoDB error by its code (a refused bulk write by its first refused write's),
    anything else by its type (its message may quote an event's data; the dead letter keeps it)."""
    if first := _first_write_error(error):
        return f"{type(error).__name__} (write error code {first.get('code')})"
    return error_summary(error) if isinstance(error, PyMongoError) else type(error).__name__


@dataclass(frozen=True)
class DeadLetter:
    reserva_id: str
    version: int
    tipo: str
    error_type: str
    error_message: str
    first_failure: datetime
    last_failure: datetime
    attempts: int
    by: str

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> DeadLetter:
        error = doc.get("error") or {}
        return cls(
            reserva_id=doc["_id"],
            version=int(doc.get("version", 0)),
            tipo=doc.get("tipo") or "",
            error_type=error.get("type", ""),
            error_message=error.get("message", ""),
            first_failure=doc["first_failure"],
            last_failure=doc["last_failure"],
            attempts=int(doc.get("attempts", 0)),
            by=doc.get("by", ""),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "reserva_id": self.reserva_id,
            "version": self.version,
            "tipo": self.tipo,
            "error": {"type": self.error_type, "message": self.error_message},
            "first_failure": self.first_failure.isoformat(),
            "last_failure": self.last_failure.isoformat(),
            "attempts": self.attempts,
            "by": self.by,
        }


class DeadLetters:
    def __init__(self, db: AsyncDatabase) -> None:
        self.collection = for_writes(db[COLLECTION])

    async def record(self, failure: StreamFailure, attempts: int, by: str) -> bool:
        """Set this stream aside, or note one more failure of one already aside; True if it is new."""
        error_type, message = describe(failure.error)
        at = now()
        result = await self.collection.update_one(
            {"_id": failure.reserva_id},
            {
                "$set": {
                    "reserva_id": failure.reserva_id,
                    "version": failure.version,
                    "tipo": failure.tipo,
                    "error": {"type": error_type, "message": message},
                    "last_failure": at,
                    "by": by,
                },
                "$setOnInsert": {"first_failure": at},
                "$inc": {"attempts": attempts},
            },
            upsert=True,
        )
        return result.upserted_id is not None

    async def resolve(self, reserva_ids: Iterable[str]) -> int:
        """These streams apply now: they are no longer aside. How many were."""
        removed = 0
        for ids in chunks(list(reserva_ids)):
            removed += (await self.collection.delete_many({"_id": {"$in": ids}})).deleted_count
        return removed

    async def ids(self) -> set[str]:
        return {doc["_id"] async for doc in self.collection.find({}, {"_id": 1})}

    async def count(self) -> int:
        return await self.collection.count_documents({})

    async def list(self, reserva_ids: Iterable[str] | None = None) -> list[DeadLetter]:
        """The dead letters (only these reservations', when given), oldest first."""
        query: dict[str, Any] = {} if reserva_ids is None else {"_id": {"$in": list(reserva_ids)}}
        cursor = self.collection.find(query).sort([("first_failure", ASCENDING), ("_id", ASCENDING)])
        return [DeadLetter.from_document(doc) async for doc in cursor]
