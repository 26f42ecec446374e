"""Saga leases against a real MongoDB: one owner at a time, expiry, release, the unsettled list."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from reservas.leases import LeaseStore


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
