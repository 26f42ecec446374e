"""eventos fixtures: a fresh server on a fresh database per test, a stub to it, and an auditor."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from pymongo import AsyncMongoClient

from eventflow.eventos.v1 import eventos_pb2, eventos_pb2_grpc
from eventos.config import Config
from eventos.repository import EventoRepository
from eventos.server import create_app
from infra.errors import error_info
from callers import AUTH, PAGE_TOKEN_KEY, open_channel

@dataclass
class EventosEnv:
    stub: eventos_pb2_grpc.EventosServiceStub
    repository: EventoRepository
    #: eventos' database, read directly by audits.
    database: Any

    async def create(self, **fields: object) -> eventos_pb2.Evento:
        values: dict[str, object] = {
            "nombre": "Concierto Arctic Monkeys",
            "lugar": "Antel Arena",
            "aforo_total": 10,
            "precio": 250_000,
        }
        values.update(fields)
        fecha = values.pop("fecha", datetime(2027, 3, 14, 21, 0, tzinfo=UTC))
        evento = eventos_pb2.Evento(**values)  # type: ignore[arg-type]
        if fecha is not None:
            evento.fecha.FromDatetime(fecha)  # type: ignore[arg-type]
        return await self.stub.CreateEvento(eventos_pb2.CreateEventoRequest(evento=evento))

    async def reservar(
        self, evento_id: str, reserva_id: str, cantidad: int = 1, asientos: list[str] | None = None, usuario: str = ""
    ) -> eventos_pb2.ReservarEntradasResponse:
        request = eventos_pb2.ReservarEntradasRequest(
            evento_id=evento_id, reserva_id=reserva_id, cantidad=cantidad, asientos=asientos or [], usuario_id=usuario
        )
        return await self.stub.ReservarEntradas(request)

    async def liberar(self, evento_id: str, reserva_id: str) -> eventos_pb2.LiberarEntradasResponse:
        return await self.stub.LiberarEntradas(
            eventos_pb2.LiberarEntradasRequest(evento_id=evento_id, reserva_id=reserva_id)
        )

    @staticmethod
    def reason(error: grpc.aio.AioRpcError) -> str:
        """The ErrorInfo reason of a failed call (asserting it carries our domain)."""
        info = error_info(error)
        assert info is not None, f"no ErrorInfo in {error!r}"
        assert info.domain == "eventos.eventflow"
        return info.reason

    @staticmethod
    def error_metadata(error: grpc.aio.AioRpcError) -> dict[str, str]:
        info = error_info(error)
        assert info is not None, f"no ErrorInfo in {error!r}"
        return dict(info.metadata)

    async def fails(self, call: object, code: grpc.StatusCode, reason: str) -> grpc.aio.AioRpcError:
        """Await `call`, assert it fails with `code` and `reason`; return the error."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call  # type: ignore[misc]
        assert caught.value.code() == code, caught.value.details()
        assert self.reason(caught.value) == reason, caught.value.details()
        return caught.value

    async def get(self, evento_id: str) -> eventos_pb2.Evento:
        return await self.stub.GetEvento(eventos_pb2.GetEventoRequest(id=evento_id))

    async def bought(self, evento_id: str) -> dict[str, int]:
        """What eventos counts per buyer of the event (usuario_id -> tickets held), those holding none left out."""
        cursor = self.database["inventario"].find({"tipo": "comprador", "evento_id": evento_id})
        return {doc["usuario_id"]: doc["entradas"] async for doc in cursor if doc["entradas"]}

    async def check_invariant(self, evento_id: str) -> eventos_pb2.Evento:
        """Assert the inventory invariant on the stored event (its per-buyer counts included); return it."""
        evento = await self.stub.GetEvento(eventos_pb2.GetEventoRequest(id=evento_id))
        allocations = await self.repository.allocations(evento_id)
        assert 0 <= evento.entradas_disponibles <= evento.aforo_total
        assert evento.entradas_disponibles + sum(a.cantidad for a in allocations) == evento.aforo_total
        assert len({a.reserva_id for a in allocations}) == len(allocations)
        per_buyer: dict[str, int] = {}
        for a in allocations:
            if a.usuario_id:
                per_buyer[a.usuario_id] = per_buyer.get(a.usuario_id, 0) + a.cantidad
        assert await self.bought(evento_id) == per_buyer, "the per-buyer counts disagree with the allocations"
        if evento.asientos:
            held = [seat for a in allocations for seat in a.asientos]
            assert len(held) == len(set(held)), "a seat is held twice"
            assert not set(held) & set(evento.asientos_disponibles), "a held seat is also available"
            assert sorted([*held, *evento.asientos_disponibles]) == sorted(evento.asientos)
            assert list(evento.asientos_disponibles) == [s for s in evento.asientos if s in set(evento.asientos_disponibles)]
            assert evento.entradas_disponibles == len(evento.asientos_disponibles)
        return evento


@pytest.fixture
def eventos_config(mongo_uri: str, db_name: Callable[[str], str]) -> Config:
    """An in-process server on a free port, with a database of this test's own."""
    return Config(
        auth=AUTH, page_token_key=PAGE_TOKEN_KEY, port=0, bind_host="127.0.0.1", mongodb_uri=mongo_uri,
        mongodb_database=db_name("eventos"),
    )


@pytest.fixture
async def eventos_address(start_app: Callable[..., Awaitable[str]], eventos_config: Config) -> str:
    """The address of a started, SERVING eventos server (stopped after the test)."""
    return await start_app(create_app(eventos_config))


@pytest.fixture
async def eventos(mongo_uri: str, eventos_config: Config, eventos_address: str) -> AsyncIterator[EventosEnv]:
    """A stub on a real channel to a fresh eventos server, with helpers and an auditor of its database."""
    client: AsyncMongoClient = AsyncMongoClient(mongo_uri, tz_aware=True)
    database = client[eventos_config.mongodb_database]
    async with open_channel(eventos_address) as channel:
        yield EventosEnv(eventos_pb2_grpc.EventosServiceStub(channel), EventoRepository(database), database)
    # Each test has a database of its own, so dropping it is tidiness: bounded, so that a transaction a failed
    # test left open (SecantusDB keeps it up to a minute, and the drop waits behind it) reports the failure
    # instead of hanging the whole suite in teardown.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(client.drop_database(database), 10)
    await client.close()
