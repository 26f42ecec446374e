"""MongoDB client helpers. One client per process, created by the server builder, never at import time."""

from __future__ import annotations

from pymongo import AsyncMongoClient, ReadPreference, WriteConcern
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

#: Inventory and money move on the primary and are acknowledged by a majority.
MAJORITY = WriteConcern("majority")


def create_client(uri: str, app_name: str) -> AsyncMongoClient:
    return AsyncMongoClient(
        uri,
        appname=app_name,
        tz_aware=True,
        serverSelectionTimeoutMS=5_000,
        connectTimeoutMS=5_000,
        retryWrites=True,
        retryReads=True,
    )


def for_reads(collection: AsyncCollection) -> AsyncCollection:
    """The collection as seen by Get/List: a secondary may answer (eventual consistency is fine there)."""
    return collection.with_options(read_preference=ReadPreference.SECONDARY_PREFERRED)


def for_writes(collection: AsyncCollection) -> AsyncCollection:
    """The collection as seen by writes that must not be lost: primary, majority."""
    return collection.with_options(read_preference=ReadPreference.PRIMARY, write_concern=MAJORITY)


async def ping(db: AsyncDatabase) -> bool:
    """True when the server answers a ping."""
    try:
        await db.command("ping")
    except PyMongoError:
        return False
    return True
