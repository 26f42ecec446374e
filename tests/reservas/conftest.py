"""Full-stack fixtures of the reservas tests: usuarios + eventos + reservas on real servers.

`world`: usuarios and eventos apps in-process (start_app), each on a fresh database, a
MongoDB client that reads the three databases directly, helpers to create users and events,
and, after the test, the DESIGN.md invariants checked on what is stored (every saga test
uses this fixture, so every one of them ends with the check). `stack`: the world plus an
in-process reservas app and a stub to it. The crash tests run reservas as a subprocess
instead (`world.reservas_env()` gives its environment).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from pymongo import AsyncMongoClient

from eventflow.eventos.v1 import eventos_pb2, eventos_pb2_grpc
from eventflow.reservas.v1 import reservas_pb2, reservas_pb2_grpc
from eventflow.usuarios.v1 import usuarios_pb2, usuarios_pb2_grpc
from eventos.config import Config as EventosConfig
from eventos.server import create_app as create_eventos
from infra.errors import error_info
from infra.server import GrpcApp
from reservas.config import Config as ReservasConfig
from reservas.server import create_app as create_reservas
from invariants import Report, check_invariants
from usuarios.config import Config as UsuariosConfig
from usuarios.server import create_app as create_usuarios
from callers import AUTH, KEY_ENV, NO_LIMITS, NO_LIMITS_ENV, PAGE_TOKEN_KEY, open_channel

FUTURE = datetime.now(UTC).replace(microsecond=0) + timedelta(days=60)
PRECIO = 1500
_serial = itertools.count(1)

PENDIENTE = reservas_pb2.ESTADO_RESERVA_PENDIENTE
CONFIRMADA = reservas_pb2.ESTADO_RESERVA_CONFIRMADA
FALLIDA = reservas_pb2.ESTADO_RESERVA_FALLIDA
CANCELADA = reservas_pb2.ESTADO_RESERVA_CANCELADA


@dataclass
class Failure:
    code: grpc.StatusCode
    reason: str
    metadata: dict[str, str]
    details: str


@dataclass
class World:
    mongo: AsyncMongoClient
    mongo_uri: str
    redis_url: str
    dbs: dict[str, str]
    usuarios_address: str
    eventos_address: str
    usuarios: usuarios_pb2_grpc.UsuariosServiceStub
    eventos: eventos_pb2_grpc.EventosServiceStub
    eventos_app: GrpcApp
    usuarios_app: GrpcApp
    start_app: Callable[[Awaitable[GrpcApp]], Awaitable[str]]
    reservas: reservas_pb2_grpc.ReservasServiceStub | None = None
    reservas_address: str = ""
    check_at_teardown: bool = True
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    # ---- setting the scene ----------------------------------------------------------------

    async def usuario(self) -> str:
        n = next(_serial)
        usuario = usuarios_pb2.Usuario(
            tipo_documento="CI",
            nro_documento=f"{uuid.uuid4().int % 10**8:08d}",
            nombre="Ana",
            apellido="Pérez",
            email=f"comprador{n}.{uuid.uuid4().hex[:6]}@example.com",
        )
        created = await self.usuarios.CreateUsuario(usuarios_pb2.CreateUsuarioRequest(usuario=usuario), timeout=10)
        return created.id

    async def usuarios_n(self, n: int) -> list[str]:
        return list(await asyncio.gather(*(self.usuario() for _ in range(n))))

    async def evento(
        self,
        aforo: int = 10,
        asientos: Sequence[str] = (),
        precio: int = PRECIO,
        fecha: datetime = FUTURE,
        max_por_usuario: int = 0,
    ) -> eventos_pb2.Evento:
        evento = eventos_pb2.Evento(
            nombre="Concierto",
            lugar="Antel Arena",
            aforo_total=0 if asientos else aforo,
            precio=precio,
            moneda="UYU",
            asientos=list(asientos),
            max_por_usuario=max_por_usuario,
        )
        evento.fecha.FromDatetime(fecha)
        return await self.eventos.CreateEvento(eventos_pb2.CreateEventoRequest(evento=evento), timeout=10)

    async def pass_time(self, evento_id: str, ago: timedelta = timedelta(days=1)) -> None:
        """The event took place `ago`: time passing, written into eventos' store (its API refuses a past fecha)."""
        moved = await self.db("eventos")["eventos"].update_one(
            {"_id": evento_id}, {"$set": {"fecha": datetime.now(UTC).replace(microsecond=0) - ago}}
        )
        assert moved.matched_count == 1

    async def get_evento(self, evento_id: str) -> eventos_pb2.Evento:
        return await self.eventos.GetEvento(eventos_pb2.GetEventoRequest(id=evento_id), timeout=10)

    async def historial_compras(self, usuario_id: str) -> list[str]:
        usuario = await self.usuarios.GetUsuario(usuarios_pb2.GetUsuarioRequest(id=usuario_id), timeout=10)
        return list(usuario.historial_compras)

    # ---- buying ----------------------------------------------------------------------------

    @staticmethod
    def request(
        usuario_id: str,
        evento_id: str,
        cantidad: int = 1,
        asientos: Sequence[str] = (),
        medio_pago: str = "tok_visa",
        key: str | None = None,
    ) -> reservas_pb2.ReservarRequest:
        return reservas_pb2.ReservarRequest(
            usuario_id=usuario_id,
            evento_id=evento_id,
            cantidad=cantidad,
            asientos=list(asientos),
            medio_pago=medio_pago,
            idempotency_key=key or uuid.uuid4().hex,
        )

    @property
    def stub(self) -> reservas_pb2_grpc.ReservasServiceStub:
        assert self.reservas is not None, "this test has no reservas server (use the `stack` fixture)"
        return self.reservas

    async def reservar(self, request: reservas_pb2.ReservarRequest, timeout: float = 30) -> reservas_pb2.Reserva:
        return await self.stub.Reservar(request, timeout=timeout)

    async def get(self, reserva_id: str) -> reservas_pb2.Reserva:
        return await self.stub.GetReserva(reservas_pb2.GetReservaRequest(id=reserva_id), timeout=10)

    async def tipos(self, reserva_id: str) -> list[str]:
        reply = await self.stub.GetHistorialReserva(
            reservas_pb2.GetHistorialReservaRequest(reserva_id=reserva_id), timeout=10
        )
        return [e.tipo for e in reply.eventos]

    async def cancelar(self, reserva_id: str) -> reservas_pb2.Reserva:
        return await self.stub.CancelarReserva(reservas_pb2.CancelarReservaRequest(id=reserva_id), timeout=30)

    @staticmethod
    async def fails(call: Awaitable[Any]) -> Failure:
        """Await a call that must fail; its code, ErrorInfo reason and metadata."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        error = caught.value
        info = error_info(error)
        return Failure(
            error.code(),
            info.reason if info else "",
            dict(info.metadata) if info else {},
            error.details() or "",
        )

    async def wait_settled(self, reserva_id: str, timeout: float = 30) -> reservas_pb2.Reserva:
        """Poll GetReserva until the reservation is no longer PENDIENTE (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                reserva = await self.get(reserva_id)
                if reserva.estado != PENDIENTE:
                    return reserva
            except grpc.aio.AioRpcError as error:
                if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
                    raise
            if loop.time() > deadline:
                raise TimeoutError(f"reservation {reserva_id} did not settle within {timeout}s")
            await asyncio.sleep(0.1)

    # ---- what is stored ---------------------------------------------------------------------

    async def check(self, allow_pending: bool = False) -> Report:
        return await check_invariants(
            self.mongo,
            usuarios_db=self.dbs["usuarios"],
            eventos_db=self.dbs["eventos"],
            reservas_db=self.dbs["reservas"],
            allow_pending=allow_pending,
        )

    def db(self, service: str) -> Any:
        return self.mongo[self.dbs[service]]

    async def ledger(self, reserva_id: str) -> list[str]:
        """The reservation's movements of money, oldest first (a void, which only refuses a late charge, moves none)."""
        cursor = self.db("reservas")["pagos"].find({"reserva_id": reserva_id, "anulado": {"$ne": True}}).sort("ocurrido", 1)
        return [doc["tipo"] async for doc in cursor]

    def reservas_config(self, **changes: Any) -> ReservasConfig:
        values: dict[str, Any] = {
            "auth": AUTH,
            "rate_limits": NO_LIMITS,
            "port": 0,
            "bind_host": "127.0.0.1",
            "mongodb_uri": self.mongo_uri,
            "mongodb_database": self.dbs["reservas"],
            "redis_url": self.redis_url,
            "usuarios_addr": self.usuarios_address,
            "eventos_addr": self.eventos_address,
            "payment_slow_seconds": 1.0,
            "payment_timeout_seconds": 0.5,
            "recovery_interval_seconds": 0.5,
            # One process here runs three servers and a hundred sagas on 2 shared cores: a call may wait
            # seconds for the event loop, which is load, not an outage (a stopped service is refused at once).
            "call_timeout_seconds": 10.0,
            "page_token_key": PAGE_TOKEN_KEY,
        }
        values.update(changes)
        return ReservasConfig(**values)

    def reservas_env(self, port: int, **extra: str) -> dict[str, str]:
        """The environment of a `python -m reservas` subprocess wired to this world."""
        env = dict(os.environ, **KEY_ENV, **NO_LIMITS_ENV)
        env.update(
            RESERVAS_PORT=str(port),
            GRPC_BIND_HOST="127.0.0.1",
            MONGODB_URI=self.mongo_uri,
            RESERVAS_MONGODB_DATABASE=self.dbs["reservas"],
            REDIS_URL=self.redis_url,
            USUARIOS_ADDR=self.usuarios_address,
            EVENTOS_ADDR=self.eventos_address,
            EVENTFLOW_PAYMENT_SLOW_SECONDS="1",
            EVENTFLOW_PAYMENT_TIMEOUT_SECONDS="0.5",
            EVENTFLOW_LEASE_SECONDS="2",
            EVENTFLOW_RECOVERY_INTERVAL_SECONDS="0.5",
        )
        env.pop("EVENTFLOW_FAULT", None)
        env.update(extra)
        return env

    async def restart_usuarios(self) -> None:
        """A new usuarios server on the same address and database (after `usuarios_app.stop()`)."""
        port = int(self.usuarios_address.rsplit(":", 1)[1])
        config = UsuariosConfig(auth=AUTH, page_token_key=PAGE_TOKEN_KEY, port=port, bind_host="127.0.0.1",
                                mongodb_uri=self.mongo_uri, mongodb_database=self.dbs["usuarios"])  # fmt: skip
        self.usuarios_app = await create_usuarios(config)
        await self.start_app(_ready(self.usuarios_app))

    def connect(self, address: str) -> reservas_pb2_grpc.ReservasServiceStub:
        channel = open_channel(address)
        self.channels.append(channel)
        return reservas_pb2_grpc.ReservasServiceStub(channel)


async def _ready(app: GrpcApp) -> GrpcApp:
    return app


@pytest.fixture
async def world(
    start_app: Callable[[Awaitable[GrpcApp]], Awaitable[str]],
    mongo_uri: str,
    redis_url: str,
    db_name: Callable[[str], str],
) -> AsyncIterator[World]:
    dbs = {service: db_name(service) for service in ("usuarios", "eventos", "reservas")}
    usuarios_app = await create_usuarios(
        UsuariosConfig(auth=AUTH, page_token_key=PAGE_TOKEN_KEY, port=0, bind_host="127.0.0.1", mongodb_uri=mongo_uri,
                       mongodb_database=dbs["usuarios"])  # fmt: skip
    )
    usuarios_address = await start_app(_ready(usuarios_app))
    eventos_app = await create_eventos(
        EventosConfig(auth=AUTH, page_token_key=PAGE_TOKEN_KEY, port=0, bind_host="127.0.0.1", mongodb_uri=mongo_uri,
                      mongodb_database=dbs["eventos"])  # fmt: skip
    )
    eventos_address = await start_app(_ready(eventos_app))
    mongo: AsyncMongoClient = AsyncMongoClient(mongo_uri, tz_aware=True)
    usuarios_channel = open_channel(usuarios_address)
    eventos_channel = open_channel(eventos_address)
    w = World(
        mongo=mongo,
        mongo_uri=mongo_uri,
        redis_url=redis_url,
        dbs=dbs,
        usuarios_address=usuarios_address,
        eventos_address=eventos_address,
        usuarios=usuarios_pb2_grpc.UsuariosServiceStub(usuarios_channel),
        eventos=eventos_pb2_grpc.EventosServiceStub(eventos_channel),
        eventos_app=eventos_app,
        usuarios_app=usuarios_app,
        start_app=start_app,
        channels=[usuarios_channel, eventos_channel],
    )
    try:
        yield w
        if w.check_at_teardown:
            await w.check()  # every saga test ends with the DESIGN.md invariants
    finally:
        for channel in w.channels:
            await channel.close()
        # The databases are not dropped: every test has its own names in the session's ephemeral server, and
        # SecantusDB's dropDatabase can block behind a change stream that a stopping projector just closed.
        await mongo.close()


@pytest.fixture
async def stack(world: World, start_app: Callable[[Awaitable[GrpcApp]], Awaitable[str]]) -> World:
    """The world plus an in-process reservas server (and `world.reservas`, a stub to it)."""
    world.reservas_address = await start_app(create_reservas(world.reservas_config()))
    world.reservas = world.connect(world.reservas_address)
    return world
