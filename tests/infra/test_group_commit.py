"""Group commit against a real MongoDB: concurrent writes coalesce, and each caller gets its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from pymongo import AsyncMongoClient, InsertOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from infra.group_commit import GroupWriter


@pytest.fixture
async def collection(mongo_uri: str, db_name: Callable[[str], str]) -> AsyncIterator[AsyncCollection]:
    client: AsyncMongoClient = AsyncMongoClient(mongo_uri)
    yield client[db_name("group_commit")]["docs"]
    await client.close()


def docs(caller: int, n: int) -> list[InsertOne]:
    return [InsertOne({"_id": f"{caller}-{i}", "caller": caller, "i": i}) for i in range(n)]


async def test_concurrent_callers_share_bulk_writes_and_all_land(collection: AsyncCollection) -> None:
    writer = GroupWriter(collection)
    await asyncio.gather(*(writer.write(docs(c, 3)) for c in range(60)))
    assert await collection.count_documents({}) == 180
    assert writer.operations == 180
    assert writer.bulk_writes < 60  # the callers that arrived during a write went together in the next


async def test_a_lone_caller_is_written_at_once(collection: AsyncCollection) -> None:
    writer = GroupWriter(collection)
    await writer.write(docs(1, 2))
    assert (writer.bulk_writes, await collection.count_documents({})) == (1, 2)


async def test_a_duplicate_fails_only_its_own_caller_which_keeps_its_prefix(collection: AsyncCollection) -> None:
    await collection.insert_one({"_id": "7-2", "caller": "someone else"})
    writer = GroupWriter(collection)
    outcomes = await asyncio.gather(*(writer.write(docs(c, 4)) for c in range(15)), return_exceptions=True)
    failed = [c for c, outcome in enumerate(outcomes) if outcome is not None]
    assert failed == [7]
    assert isinstance(outcomes[7], DuplicateKeyError)
    mine = {d["_id"] async for d in collection.find({"caller": 7})}
    assert mine == {"7-0", "7-1"}  # a prefix of its writes, up to the duplicate
    assert await collection.count_documents({"caller": {"$ne": 7}}) == 14 * 4 + 1  # everyone else's landed


async def test_updates_and_inserts_keep_each_callers_order(collection: AsyncCollection) -> None:
    writer = GroupWriter(collection, max_ops=5)  # several bulk writes, split between callers only

    async def caller(c: int) -> None:
        await writer.write([InsertOne({"_id": c, "n": 0}), UpdateOne({"_id": c}, {"$inc": {"n": 1}})])
        await writer.write([UpdateOne({"_id": c}, {"$inc": {"n": 10}})])

    await asyncio.gather(*(caller(c) for c in range(20)))
    assert [d["n"] async for d in collection.find({})] == [11] * 20
