"""The bare-store floor: the minimal work of one reservation, done directly on the stores.

DESIGN.md judges a purchase against it: find the user, hold the tickets in Redis (SET NX PX), take
them with a conditional `$inc` of the event's counter, insert the reservation, `$push` it to the
user's history, release the hold. Six round trips, four of them to MongoDB (writes acknowledged by
a majority, as the services write inventory and money), each awaited before the next, as a saga
must. No saga log, no payment, no recovery: what no correct system can do with less.

It runs with async pymongo and redis.asyncio, at the same purchases in flight as the system, on a
pair of stores of the same kind started just for it (or, against servers of your own, in a
database and under a key prefix of its own), so the system's data does not slow it.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial

from pymongo import AsyncMongoClient, WriteConcern
from redis.asyncio import Redis

from tests.bench.load import Call

HOLD_TTL_MS = 600_000
SOLD_OUT = "SOLD_OUT"


class Floor:
    """One database and one key prefix: users, events and reservations shaped like the services' own."""

    def __init__(self, mongo: AsyncMongoClient, redis: Redis, database: str, prefix: str) -> None:
        db = mongo.get_database(database, write_concern=WriteConcern("majority"))
        self.usuarios, self.eventos, self.reservas = db["usuarios"], db["eventos"], db["reservas"]
        self.redis = redis
        self.prefix = prefix

    async def create_usuarios(self, n: int) -> list[str]:
        ids = [uuid.uuid4().hex for _ in range(n)]
        docs = [{"_id": i, "nombre": "Comprador", "email": f"{i}@floor.example.com", "historial_compras": []} for i in ids]
        await self.usuarios.insert_many(docs)
        return ids

    async def create_evento(self, aforo: int) -> str:
        evento_id = uuid.uuid4().hex
        await self.eventos.insert_one({"_id": evento_id, "aforo_total": aforo, "entradas_disponibles": aforo})
        return evento_id

    async def reserve(self, usuario_id: str, evento_id: str, cantidad: int = 1) -> str:
        """One reservation, step by step; its id, or SOLD_OUT when the counter had too few tickets."""
        reserva_id = uuid.uuid4().hex
        usuario = await self.usuarios.find_one({"_id": usuario_id}, {"_id": 1})
        if usuario is None:
            raise LookupError(f"floor: no usuario {usuario_id}")
        hold = f"{self.prefix}hold:{evento_id}:{reserva_id}"
        if not await self.redis.set(hold, reserva_id, nx=True, px=HOLD_TTL_MS):
            raise RuntimeError(f"floor: hold {hold} already taken")
        taken = await self.eventos.update_one(
            {"_id": evento_id, "entradas_disponibles": {"$gte": cantidad}}, {"$inc": {"entradas_disponibles": -cantidad}}
        )
        if taken.modified_count != 1:
            await self.redis.delete(hold)
            return SOLD_OUT
        await self.reservas.insert_one(
            {"_id": reserva_id, "usuario_id": usuario_id, "evento_id": evento_id, "cantidad": cantidad,
             "estado": "CONFIRMADA", "creada": datetime.now(UTC)}
        )  # fmt: skip
        await self.usuarios.update_one({"_id": usuario_id}, {"$push": {"historial_compras": reserva_id}})
        await self.redis.delete(hold)
        return reserva_id

    def purchases(self, usuarios: list[str], evento_id: str) -> Iterator[Call]:
        """Endless reservations of 1 ticket, the buyers taken in turn (for a time-budgeted pool)."""
        for n in itertools.count():
            yield partial(self.reserve, usuarios[n % len(usuarios)], evento_id)

    async def drop(self) -> None:
        """Remove what it stored (only on servers of your own: embedded stores are thrown away whole)."""
        await self.usuarios.database.client.drop_database(self.usuarios.database.name)
        async for key in self.redis.scan_iter(match=f"{self.prefix}*"):
            await self.redis.delete(key)
