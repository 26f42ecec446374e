"""A take's transaction left open by a killed eventos does not freeze its event (issue 9; eventos.sessions).

The server keeps a dead client's transaction open for its lifetime (60 s), and meanwhile every take of the
event meets a write conflict. The next eventos process ends the sessions the dead one recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from pymongo import AsyncMongoClient

from eventos.domain import EventoDraft, ReservaRequest
from eventos.repository import COLLECTION, EventoRepository
from eventos_support import service_of
from eventos.sessions import COLLECTION as SESSIONS

FECHA = datetime(2030, 3, 14, 21, 0, tzinfo=UTC)


async def test_the_next_process_ends_the_transaction_a_killed_one_left_open(
    mongo_uri: str, db_name: Callable[[str], str]
) -> None:
    database = db_name("eventos")
    dead_client: AsyncMongoClient = AsyncMongoClient(mongo_uri, tz_aware=True)
    client: AsyncMongoClient = AsyncMongoClient(mongo_uri, tz_aware=True)
    try:
        dead = EventoRepository(dead_client[database])
        evento = await service_of(dead).create(EventoDraft("Concierto", FECHA, "Estadio", 10, 100, "", ()))
        async with dead.sessions.session() as session:  # a take half-way when the process was killed
            await session.start_transaction()
            await dead_client[database][COLLECTION].update_one(
                {"_id": evento.id}, {"$inc": {"inventario_version": 1}}, session=session
            )
        # ... and nothing more from it: its client is neither used nor closed (closing would end the sessions).

        restarted = EventoRepository(client[database])
        assert await restarted.sessions.start() == len(dead.sessions._sessions)
        async with asyncio.timeout(10):  # the server alone would keep the event locked for 60 s
            taken = await service_of(restarted).reservar(ReservaRequest(evento.id, "r1", 2))
        assert taken.entradas_disponibles == 8

        await restarted.close()  # a graceful stop ends its sessions: nothing is left for the next one
        assert await client[database][SESSIONS].count_documents({}) == 0
    finally:
        await client.close()
        await dead_client.close()
