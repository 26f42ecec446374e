"""Idempotency keys: (usuario_id, idempotency_key) -> the one reservation it started.

Collection "idempotencia", one document per key: `{_id, reserva_id, huella, creada}`, where
`_id` is the JSON array [usuario_id, idempotency_key] (unambiguous whatever the strings hold)
and `huella` is a fingerprint of the request. A key whose purchase failed only because a
dependency was unavailable is re-pointed at a new attempt (`anteriores` keeps the failed
ones), so a client that retries with the same key after an outage buys once it is over. The key is claimed (inserted) BEFORE the
reservation's first event is appended; the unique `_id` makes exactly one claim win, and
every repeat reads the winner's reserva_id. This module is the only one that knows the shape.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from pymongo.asynchronous.database import AsyncDatabase
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from infra.errors import FailedPrecondition
from infra.mongo import for_writes

COLLECTION = "idempotencia"


class KeyReused(FailedPrecondition):
    reason = "IDEMPOTENCY_KEY_REUSED"


def _key(usuario_id: str, idempotency_key: str) -> str:
    return json.dumps([usuario_id, idempotency_key], ensure_ascii=False, separators=(",", ":"))


class IdempotencyKeys:
    def __init__(self, db: AsyncDatabase) -> None:
        self.collection = for_writes(db[COLLECTION])

    async def ensure_indexes(self) -> None:
        """Nothing beyond the unique `_id`."""

    async def claim(self, usuario_id: str, idempotency_key: str, huella: str, reserva_id: str) -> str:
        """The reservation this key stands for: `reserva_id` if this claim won, else the earlier one.

        KeyReused if the key was claimed by a different request.
        """
        doc = {
            "_id": _key(usuario_id, idempotency_key),
            "reserva_id": reserva_id,
            "huella": huella,
            "creada": datetime.now(UTC),
        }
        try:
            await self.collection.insert_one(doc)
            return reserva_id
        except DuplicateKeyError:
            existing = await self.collection.find_one({"_id": doc["_id"]})
        if existing is None:  # pragma: no cover - keys are never deleted
            raise RuntimeError("an idempotency key vanished")
        if existing["huella"] != huella:
            raise KeyReused(
                f"idempotency_key {idempotency_key!r} was already used by this user for a different purchase "
                f"(reservation {existing['reserva_id']}); use a new key for a new purchase",
                metadata={"field": "idempotency_key", "reserva_id": existing["reserva_id"]},
            )
        return str(existing["reserva_id"])

    async def repoint(self, usuario_id: str, idempotency_key: str, old_id: str, new_id: str) -> str:
        """Point the key at `new_id` if it still points at `old_id`; the reservation it points at after."""
        key = _key(usuario_id, idempotency_key)
        doc = await self.collection.find_one_and_update(
            {"_id": key, "reserva_id": old_id},
            {"$set": {"reserva_id": new_id}, "$push": {"anteriores": old_id}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:  # another repeat re-pointed it first: follow it
            doc = await self.collection.find_one({"_id": key})
        if doc is None:  # pragma: no cover - keys are never deleted
            raise RuntimeError("an idempotency key vanished")
        return str(doc["reserva_id"])
