"""Saga leases against a real MongoDB: one owner at a time, expiry, release, the unsettled list, and the
idempotency keys of an earlier version (collection "idempotencia") moved into them."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from reservas.leases import KeyReused, LeaseStore, clave


@pytest.fixture
async def db(mongo_uri: str, db_name: Callable[[str], str]) -> AsyncIterator[AsyncDatabase]:
    client: AsyncMongoClient = AsyncMongoClient(mongo_uri, tz_aware=True)
    name = db_name("reservas")
    await LeaseStore(client[name], "setup").ensure_indexes()
    yield client[name]
    await client.drop_database(name)
    await client.close()


def reserva() -> str:
    return uuid.uuid4().hex


async def test_acquire_is_exclusive_and_reentrant(db: AsyncDatabase) -> None:
    a, b = LeaseStore(db, "a"), LeaseStore(db, "b")
    r = reserva()
    assert await a.acquire(r)
    assert not await b.acquire(r)
    assert await a.acquire(r)  # already ours
    assert await a.renew(r)
    assert not await b.renew(r)


async def test_two_owners_racing_one_wins(db: AsyncDatabase) -> None:
    for _ in range(5):
        r = reserva()
        stores = [LeaseStore(db, f"p{i}") for i in range(6)]
        won = await asyncio.gather(*(s.acquire(r) for s in stores))
        assert sum(won) == 1
        doc = await db["saga_leases"].find_one({"_id": r})
        assert doc is not None
        assert doc["owner"] == stores[won.index(True)].owner


async def test_an_expired_lease_can_be_taken_and_the_old_owner_cannot_renew(db: AsyncDatabase) -> None:
    a, b = LeaseStore(db, "a", ttl_seconds=0.2), LeaseStore(db, "b", ttl_seconds=60)
    r = reserva()
    assert await a.acquire(r)
    for _ in range(100):
        if await b.acquire(r):
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the expired lease was never taken")
    assert not await a.renew(r)
    assert not await a.acquire(r)


async def test_release_only_by_the_owner(db: AsyncDatabase) -> None:
    a, b = LeaseStore(db, "a"), LeaseStore(db, "b")
    r = reserva()
    assert await a.acquire(r)
    await b.release(r)  # not b's: nothing happens
    assert not await b.acquire(r)
    await a.release(r)
    assert await b.acquire(r)
    assert not await a.renew(r)


async def test_unsettled_lists_open_sagas_older_than_the_threshold(db: AsyncDatabase) -> None:
    store = LeaseStore(db, "a")
    old_open, old_settled, young_open = reserva(), reserva(), reserva()
    await store.mark_open(old_open)
    await store.mark_open(old_settled)
    await store.mark_settled(old_settled)
    await asyncio.sleep(0.3)
    await store.mark_open(young_open)
    await store.mark_open(old_open)  # a repeat keeps its first opened_at
    assert await store.unsettled(older_than_seconds=0.25) == [old_open]
    assert set(await store.unsettled(older_than_seconds=0)) == {old_open, young_open}
    assert await store.unsettled(older_than_seconds=0, limit=1) == [old_open]  # oldest first
    await store.mark_settled(old_open)
    assert await store.unsettled(older_than_seconds=0) == [young_open]


async def test_unsettled_skips_sagas_under_a_live_lease(db: AsyncDatabase) -> None:
    a, b = LeaseStore(db, "a", ttl_seconds=60), LeaseStore(db, "b", ttl_seconds=0.2)
    driven, abandoned, released = reserva(), reserva(), reserva()
    for r in (driven, abandoned, released):
        await a.mark_open(r)
    assert await a.acquire(driven)
    assert await b.acquire(abandoned)  # b "dies" holding it; its lease expires
    assert await a.acquire(released)
    await a.release(released)
    for _ in range(100):
        if set(await a.unsettled(0)) == {abandoned, released}:
            break
        await asyncio.sleep(0.05)
    assert set(await a.unsettled(0)) == {abandoned, released}
    assert await a.acquire(abandoned)


async def test_a_settled_saga_can_be_opened_again(db: AsyncDatabase) -> None:
    store = LeaseStore(db, "a")
    r = reserva()
    await store.mark_open(r)
    await store.mark_settled(r)
    assert await store.unsettled(0) == []
    await store.mark_open(r)  # e.g. a cancellation of a confirmed reservation
    assert await store.unsettled(0) == [r]


async def test_leases_and_open_marks_are_independent(db: AsyncDatabase) -> None:
    store = LeaseStore(db, "a")
    r = reserva()
    await store.mark_open(r)  # before any lease
    assert await store.acquire(r)
    await store.mark_settled(r)
    assert await store.renew(r)
    await store.release(r)
    assert await LeaseStore(db, "b").acquire(r)


# ---- idempotency keys of an earlier version --------------------------------------------------------

CREADA = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)


def old_key(usuario_id: str, key: str, reserva_id: str, huella: str = "h", **more: Any) -> dict[str, Any]:
    """An idempotency key as c6109af stored it (see `git show c6109af:reservas/idempotency.py`)."""
    return {"_id": clave(usuario_id, key), "reserva_id": reserva_id, "huella": huella, "creada": CREADA, **more}


async def test_old_keys_are_given_to_their_reservations_and_a_repeat_finds_them(db: AsyncDatabase) -> None:
    settled, never_started, repointed, gone = reserva(), reserva(), reserva(), reserva()
    # c6109af's saga_leases: lease and open mark only. A claim whose starter died before the saga opened has none.
    await db["saga_leases"].insert_many(
        [
            {"_id": settled, "open": False, "opened_at": CREADA, "settled_at": CREADA},
            {"_id": repointed, "open": False, "opened_at": CREADA, "settled_at": CREADA},
            {"_id": gone, "open": False, "opened_at": CREADA, "settled_at": CREADA},
        ]
    )
    await db["idempotencia"].insert_many(
        [
            old_key("u1", "k1", settled, "h1"),
            old_key("u1", "k2", never_started, "h2"),
            old_key("u2", "k1", repointed, "h3", anteriores=[gone]),  # re-pointed after an outage: gone needs nothing
        ]
    )
    store = LeaseStore(db, "a")
    assert await store.migrate_legacy_keys() == 3
    assert await db["idempotencia"].count_documents({}) == 0
    moved = await db["saga_leases"].find_one({"_id": settled})
    assert moved is not None
    assert (moved["clave"], moved["huella"], moved["creada"], moved["settled_at"]) == (clave("u1", "k1"), "h1", CREADA, CREADA)
    assert "clave" not in (await db["saga_leases"].find_one({"_id": gone}) or {})

    # A repeat of each purchase answers its reservation; a different request with the key is refused.
    assert tuple(await store.claim("u1", "k1", "h1", reserva())) == (settled, False)
    assert tuple(await store.claim("u1", "k2", "h2", reserva())) == (never_started, False)
    assert tuple(await store.claim("u2", "k1", "h3", reserva())) == (repointed, False)
    assert await store.holder("u2", "k1") == repointed
    with pytest.raises(KeyReused):
        await store.claim("u1", "k1", "another purchase", reserva())
    assert (await store.claim("u3", "k1", "h", reserva())).won  # other keys: as ever


class Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name not in {"endSessions", "hello", "isMaster", "ismaster", "killCursors"}:
            self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_moving_old_keys_again_or_after_a_crash_or_from_two_replicas_is_harmless(
    db: AsyncDatabase, mongo_uri: str
) -> None:
    rids = [reserva() for _ in range(7)]
    await db["idempotencia"].insert_many([old_key("u", f"k{i}", rid, f"h{i}") for i, rid in enumerate(rids)])
    # A run that died after giving k0 its reservation, before deleting the old document.
    await db["saga_leases"].insert_one({"_id": rids[0], "clave": clave("u", "k0"), "huella": "h0", "creada": CREADA})
    # Two replicas at once, in small rounds.
    a, b = LeaseStore(db, "a"), LeaseStore(db, "b")
    moved = await asyncio.gather(a.migrate_legacy_keys(batch=2), b.migrate_legacy_keys(batch=3))
    assert sum(moved) == 6  # k0 was given already; each other key by exactly one of them
    assert await db["idempotencia"].count_documents({}) == 0
    for i, rid in enumerate(rids):
        assert await a.holder("u", f"k{i}") == rid
    assert await db["saga_leases"].count_documents({"clave": {"$exists": True}}) == 7

    # Nothing left: a run is one query.
    commands = Commands()
    client: AsyncMongoClient = AsyncMongoClient(mongo_uri, tz_aware=True, event_listeners=[commands])
    try:
        assert await LeaseStore(client[db.name], "c").migrate_legacy_keys() == 0
        assert commands.names == ["find"]
    finally:
        await client.close()


async def test_an_old_key_already_taken_by_another_reservation_is_dropped_with_a_warning(
    db: AsyncDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    old, new = reserva(), reserva()
    store = LeaseStore(db, "a")
    assert (await store.claim("u", "k", "h", new)).won  # a purchase with the key reached this version first
    await db["idempotencia"].insert_one(old_key("u", "k", old))
    with caplog.at_level(logging.WARNING, logger="reservas.leases"):
        assert await store.migrate_legacy_keys() == 0
    assert any(r.getMessage() == "legacy idempotency key already taken; dropped" for r in caplog.records)
    assert await store.holder("u", "k") == new
    assert await db["idempotencia"].count_documents({}) == 0
