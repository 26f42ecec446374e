"""Saga claims: the idempotency key, the lease and the open mark of a reservation, in one document.

The collection "saga_leases" holds one document per reservation, keyed by its id:
`{_id: reserva_id, clave, huella, creada, owner, expires, open, opened_at, settled_at}`.

- `claim` starts a purchase with ONE insert: the idempotency key (`clave`, unique: the JSON
  array [usuario_id, idempotency_key], unambiguous whatever the strings hold; `huella`, a
  fingerprint of the request), the lease (ours) and the open mark. A repeat of the key collides
  on the unique `clave` and reads the reservation the key stands for. A key whose purchase failed
  only because a dependency was unavailable is moved to a new attempt by `repoint` (the old
  document keeps it as `clave_anterior`), so a client that retries after an outage buys.

- A lease is `owner` + `expires`. `acquire` is one atomic find-and-modify whose filter is
  "free, expired, or already mine", with upsert for the first claim; when another process
  holds it, the filter does not match, the upsert collides on `_id` (DuplicateKeyError)
  and the answer is "not acquired". The holder keeps it with `renew` and gives it up with
  `release`; if it dies, the lease expires after `ttl_seconds` and another process may take it.
- The lease and open-mark operations the saga's driver uses raise StoreUnavailable, the saga's own signal,
  when MongoDB does not answer (never pymongo's errors).
- `open` marks a saga that has not settled: `mark_open` when it starts, `mark_settled`
  when it ends. Recovery scans `unsettled(older_than)` for the ones left behind.

Time: expiries are written and compared with this process's clock (UTC), not the
server's. That is exact in tests and on one machine; across machines the clocks must
agree to well within the TTL (NTP does), or a lease could be taken early or late by the
skew.

Within one process, "already mine" is also True: the lease keeps other processes out,
not the same process twice; the caller keeps its own in-flight sagas apart.

Keys of an earlier version (up to c6109af) live in the collection "idempotencia", one document
per key: `{_id: clave, reserva_id, huella, creada, anteriores?}` (`anteriores`: attempts the key
was re-pointed away from, which need nothing here). `migrate_legacy_keys` runs at startup, before
recovery and before the service reports SERVING: it gives each key to its reservation's document
here (an upsert of `{_id: reserva_id}` that sets `clave`, `huella` and `creada`), and only then
deletes the old document. A crash in between leaves a key in both places, and the next run finds
it here already and just deletes the old one; two replicas doing it at once write the same
values. A repeat of a pre-upgrade purchase then collides on `clave` like any other.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from pymongo import ASCENDING, DeleteOne, IndexModel, InsertOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from infra.errors import FailedPrecondition
from infra.group_commit import DUPLICATE_KEY, GroupWriter
from infra.mongo import for_writes, store_errors_as
from reservas.domain import StoreUnavailable

log = logging.getLogger(__name__)

COLLECTION = "saga_leases"
#: Where an earlier version kept the idempotency keys (see the module docstring).
LEGACY_KEYS = "idempotencia"
#: Old keys moved per round (one read, one bulk upsert, one bulk delete).
LEGACY_BATCH = 500


class KeyReused(FailedPrecondition):
    reason = "IDEMPOTENCY_KEY_REUSED"


class Claim(NamedTuple):
    """The reservation an idempotency key stands for, and whether this claim created it (ours: leased, open)."""

    reserva_id: str
    won: bool


def clave(usuario_id: str, idempotency_key: str) -> str:
    """The stored form of an idempotency key: unambiguous whatever the two strings hold."""
    return json.dumps([usuario_id, idempotency_key], ensure_ascii=False, separators=(",", ":"))


def _now() -> datetime:
    return datetime.now(UTC)


class LeaseStore:
    def __init__(self, db: AsyncDatabase, owner: str, ttl_seconds: float = 15.0) -> None:
        if not owner:
            raise ValueError("a lease owner needs a non-empty name")
        self.collection = for_writes(db[COLLECTION])
        self.legacy_keys = for_writes(db[LEGACY_KEYS])
        #: Claims and settlements of concurrent sagas go in one bulk write.
        self.writer = GroupWriter(self.collection)
        self.owner = owner
        self.ttl = timedelta(seconds=ttl_seconds)

    async def ensure_indexes(self) -> None:
        await self.collection.create_indexes(
            [
                IndexModel([("open", ASCENDING), ("opened_at", ASCENDING)], name="open"),
                # Sparse: a re-pointed attempt gives its key up, and a document without one is not indexed.
                IndexModel([("clave", ASCENDING)], unique=True, sparse=True, name="clave"),
            ]
        )

    # ---- the idempotency key -----------------------------------------------------------------

    async def claim(self, usuario_id: str, idempotency_key: str, huella: str, reserva_id: str) -> Claim:
        """The reservation this key stands for: `reserva_id` if this claim won, else the earlier one.

        A won claim is leased by us and open, in the same insert: the caller drives it at once.
        A claim of an id the key already names (a repeat) is not won. KeyReused if the key was
        claimed by a different request.
        """
        key = clave(usuario_id, idempotency_key)
        now = _now()
        doc = {
            "_id": reserva_id,
            "clave": key,
            "huella": huella,
            "creada": now,
            "owner": self.owner,
            "expires": now + self.ttl,
            "open": True,
            "opened_at": now,
        }
        for _ in range(3):
            try:
                await self.writer.write([InsertOne(doc)])
                return Claim(str(doc["_id"]), won=True)
            except DuplicateKeyError:
                existing = await self.collection.find_one({"clave": key}, {"huella": 1})
            if existing is not None:
                break
            # Nobody holds the key, so the collision was on `_id`: an earlier attempt of this key that gave
            # it up (re-pointed away). It takes the key back if it still has none; else claim a fresh id.
            taken_back = await self.collection.update_one(
                {"_id": doc["_id"], "clave": {"$exists": False}, "huella": huella}, {"$set": {"clave": key}}
            )
            if taken_back.matched_count:
                return Claim(str(doc["_id"]), won=False)
            doc["_id"] = uuid.uuid4().hex
        else:
            raise RuntimeError(f"could not claim idempotency key {idempotency_key!r}")  # pragma: no cover
        if existing["huella"] != huella:
            raise KeyReused(
                f"idempotency_key {idempotency_key!r} was already used by this user for a different purchase "
                f"(reservation {existing['_id']}); use a new key for a new purchase",
                metadata={"field": "idempotency_key", "reserva_id": existing["_id"]},
            )
        return Claim(str(existing["_id"]), won=False)

    async def holder(self, usuario_id: str, idempotency_key: str) -> str | None:
        """The reservation this key stands for, if it was claimed (one indexed read)."""
        doc = await self.collection.find_one({"clave": clave(usuario_id, idempotency_key)}, {"_id": 1})
        return None if doc is None else str(doc["_id"])

    async def repoint(self, usuario_id: str, idempotency_key: str, old_id: str, huella: str, new_id: str) -> Claim:
        """Move the key from `old_id` to a new claim `new_id`, if it is still at `old_id`; where it points after."""
        key = clave(usuario_id, idempotency_key)
        await self.collection.update_one(
            {"_id": old_id, "clave": key}, {"$unset": {"clave": ""}, "$set": {"clave_anterior": key}}
        )
        return await self.claim(usuario_id, idempotency_key, huella, new_id)

    async def migrate_legacy_keys(self, batch: int = LEGACY_BATCH) -> int:
        """Give every key of the earlier version to its reservation here, then delete it there; how many
        keys this call gave. Idempotent and crash-safe (see the module docstring). With nothing to
        move, one query (on `_id`) of an empty collection.
        """
        moved = found = 0
        last: str | None = None
        while True:
            query = {} if last is None else {"_id": {"$gt": last}}
            docs = await self.legacy_keys.find(query).sort("_id", ASCENDING).limit(batch).to_list()
            if not docs:
                break
            last = docs[-1]["_id"]
            moved += await self._adopt_legacy_keys(docs)
            found += len(docs)
            if len(docs) < batch:
                break
        if found:
            log.info("legacy idempotency keys migrated", extra={"found": found, "moved": moved})
        return moved

    async def _adopt_legacy_keys(self, docs: list[dict[str, Any]]) -> int:
        """One round of `migrate_legacy_keys`: how many of `docs` were given to their reservation by this call."""
        rids = [str(doc["reserva_id"]) for doc in docs]
        held = {
            lease["_id"]: lease.get("clave")
            async for lease in self.collection.find({"_id": {"$in": rids}}, {"clave": 1})
        }
        giving = [(doc, rid) for doc, rid in zip(docs, rids, strict=True) if held.get(rid) != doc["_id"]]
        writes = []
        for doc, rid in giving:
            fields = {"clave": doc["_id"], "huella": doc["huella"]}
            if doc.get("creada") is not None:
                fields["creada"] = doc["creada"]
            # Only a document without a key takes it: one that holds another key collides on `_id`.
            writes.append(UpdateOne({"_id": rid, "clave": {"$exists": False}}, {"$set": fields}, upsert=True))
        refused: set[int] = set()
        if writes:
            try:
                await self.collection.bulk_write(writes, ordered=False)
            except BulkWriteError as error:
                details = error.details
                if details.get("writeConcernErrors") or any(
                    e.get("code") != DUPLICATE_KEY for e in details.get("writeErrors") or ()
                ):
                    raise
                refused = {e["index"] for e in details["writeErrors"]}
        for index in sorted(refused):
            doc, rid = giving[index]
            holder = await self.collection.find_one({"clave": doc["_id"]}, {"_id": 1})
            if holder is not None and holder["_id"] == rid:
                continue  # another replica gave it meanwhile
            # Two reservations for one key (a purchase with it reached this version before its key was moved):
            # the one here answers repeats from now on; the other one stays in the event store.
            log.warning(
                "legacy idempotency key already taken; dropped",
                extra={"clave": doc["_id"], "legacy_reserva_id": rid, "holder": None if holder is None else holder["_id"]},
            )
        await self.legacy_keys.bulk_write(
            [DeleteOne({"_id": doc["_id"], "reserva_id": doc["reserva_id"]}) for doc in docs], ordered=False
        )
        return len(giving) - len(refused)

    def _takeable(self, now: datetime) -> dict[str, Any]:
        """Free (never held or released), expired, or ours."""
        return {"$or": [{"owner": None}, {"expires": {"$lte": now}}, {"owner": self.owner}]}

    async def acquire(self, reserva_id: str) -> bool:
        """Take the lease if it is free, expired, or already ours (then it is extended)."""
        now = _now()
        with store_errors_as(lambda: StoreUnavailable.about(reserva_id)):
            try:
                # An update, not a findAndModify (whose cost grows with the collection on SecantusDB): the
                # filter decides, so matching or inserting means the lease is ours.
                result = await self.collection.update_one(
                    {"_id": reserva_id, **self._takeable(now)},
                    {"$set": {"owner": self.owner, "expires": now + self.ttl}},
                    upsert=True,
                )
            except DuplicateKeyError:  # held by another owner: the upsert collided with the existing document
                return False
            return result.matched_count == 1 or result.upserted_id is not None

    async def renew(self, reserva_id: str) -> bool:
        """Extend our lease; False when it is no longer ours (it expired and another process took it)."""
        now = _now()
        with store_errors_as(lambda: StoreUnavailable.about(reserva_id)):
            result = await self.collection.update_one(
                {"_id": reserva_id, "owner": self.owner}, {"$set": {"expires": now + self.ttl}}
            )
            return result.matched_count == 1

    async def release(self, reserva_id: str) -> None:
        """Give the lease up, if it is ours; someone else's is left alone."""
        with store_errors_as(lambda: StoreUnavailable.about(reserva_id)):
            await self.collection.update_one(
                {"_id": reserva_id, "owner": self.owner}, {"$unset": {"owner": "", "expires": ""}}
            )

    async def mark_open(self, reserva_id: str) -> None:
        """Record that a saga is in progress. Idempotent: an open saga keeps its first `opened_at`."""
        with store_errors_as(lambda: StoreUnavailable.about(reserva_id)):
            try:
                await self.collection.update_one(
                    {"_id": reserva_id, "open": {"$ne": True}},
                    {"$set": {"open": True, "opened_at": _now()}},
                    upsert=True,
                )
            except DuplicateKeyError:  # already open: the upsert collided with the existing document
                pass

    async def mark_settled(self, reserva_id: str) -> None:
        with store_errors_as(lambda: StoreUnavailable.about(reserva_id)):
            await self.collection.update_one(
                {"_id": reserva_id, "open": True}, {"$set": {"open": False, "settled_at": _now()}}
            )

    async def settle_and_release(self, reserva_id: str) -> None:
        """`mark_settled` and `release` in one write (the end of a saga that settled under our lease)."""
        with store_errors_as(lambda: StoreUnavailable.about(reserva_id)):
            await self.writer.write(
                [
                    UpdateOne(
                        {"_id": reserva_id, "owner": self.owner},
                        {"$set": {"open": False, "settled_at": _now()}, "$unset": {"owner": "", "expires": ""}},
                    )
                ]
            )

    async def unsettled(self, older_than_seconds: float, limit: int = 100, scan: int = 1000) -> list[str]:
        """Open sagas opened more than `older_than_seconds` ago and not under a live lease, oldest first.

        The query is only what the (open, opened_at) index answers; the lease condition is checked
        here, on at most `scan` open sagas (those in flight): with an `$or` on the lease in the query
        SecantusDB scans every saga ever recorded (170 ms at 20,000), a cost that grows with sales.
        """
        now = _now()
        query = {"open": True, "opened_at": {"$lte": now - timedelta(seconds=older_than_seconds)}}
        projection = {"_id": 1, "owner": 1, "expires": 1}
        cursor = self.collection.find(query, projection).sort("opened_at", ASCENDING).limit(scan)
        free = []
        async for doc in cursor:
            if doc.get("owner") is None or (doc.get("expires") is not None and doc["expires"] <= now):
                free.append(doc["_id"])
                if len(free) == limit:
                    break
        return free
