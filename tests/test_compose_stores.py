"""The services against stores locked down as docker-compose.yml locks them down, without a Docker engine.

SecantusDB stands in for mongod with authentication on (`--auth`: SCRAM, per-database roles), provisioned with
the root user and the users compose's init script creates (the script run under node, as in test_compose.py);
redis-server loads the ACL file `eventflow compose-secrets` writes. Each service gets its environment from the
compose file, interpolated with the .env that compose-secrets writes, pointed at these stores. So this shows
that the code works with authenticated URIs, that readWrite on its own database is all each service needs
(reservas' transactions, change streams and projector included), and that it is all each one has.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import shlex
import socket
import subprocess
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from eventflow.eventos.v1 import eventos_pb2, eventos_pb2_grpc
from eventflow.reservas.v1 import reservas_pb2, reservas_pb2_grpc
from eventflow.usuarios.v1 import usuarios_pb2, usuarios_pb2_grpc
from infra import procs
from infra.compose_secrets import ComposeSecrets, ensure_compose_secrets, read_env_file
from infra.logs import JsonFormatter
from infra.mongo import create_client, ping
from infra.server import GrpcApp
from test_compose import COMPOSE, interpolate, mongo_users, parse_compose

SERVICES = ("usuarios", "eventos", "reservas")


@dataclass
class Stores:
    made: ComposeSecrets
    dotenv: dict[str, str]
    compose: dict[str, Any]
    mongo_port: int
    redis_port: int

    @property
    def root_uri(self) -> str:
        root = self.compose["services"]["mongo"]["environment"]["MONGO_INITDB_ROOT_USERNAME"]
        password = self.made.mongo_root_password.read_text().strip()
        return f"mongodb://{root}:{password}@127.0.0.1:{self.mongo_port}/?directConnection=true&authSource=admin"

    def env(self, service: str) -> dict[str, str]:
        """The compose environment of `service`, interpolated, with the stores and key files of this machine."""
        env = {k: interpolate(str(v), self.dotenv) for k, v in self.compose["services"][service]["environment"].items()}
        env["GRPC_BIND_HOST"] = "127.0.0.1"
        env["MONGODB_URI"] = (
            env["MONGODB_URI"]
            .replace("@mongo:27017/", f"@127.0.0.1:{self.mongo_port}/")
            .replace("replicaSet=rs0", "directConnection=true")  # SecantusDB: one node, no replica set name
        )
        if "REDIS_URL" in env:
            env["REDIS_URL"] = env["REDIS_URL"].replace("@redis:6379/", f"@127.0.0.1:{self.redis_port}/")
        for name, value in env.items():
            if value.startswith("/run/secrets/"):
                secret = self.compose["secrets"][value.removeprefix("/run/secrets/")]
                env[name] = str(self.made.directory / secret["file"])
        return env


def _mongo(port: int, storage: Path, log: Path, *, auth: bool) -> procs.ManagedProcess:
    server = procs.mongo_process(port, storage, log)
    return dataclasses.replace(server, argv=[*server.argv, *(["--auth"] if auth else [])]).start()


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    tmp = tmp_path_factory.mktemp("compose-stores")
    made = ensure_compose_secrets(tmp / "deployment")
    dotenv = read_env_file(made.env_file)
    compose = parse_compose(COMPOSE.read_text(encoding="utf-8"))
    mongo_env = {k: interpolate(str(v), dotenv) for k, v in compose["services"]["mongo"]["environment"].items()}
    users = mongo_users(mongo_env)  # what the init script creates, run under node (skips without node)

    # As the mongo image does it: users made on a server without authentication, which then restarts with it.
    mongo_port = procs.free_port()
    setup = _mongo(mongo_port, tmp / "mongodb", tmp / "mongodb.log", auth=False)
    setup.wait_listening()
    with MongoClient(f"mongodb://127.0.0.1:{mongo_port}/?directConnection=true") as client:
        root = mongo_env["MONGO_INITDB_ROOT_USERNAME"]
        client.admin.command("createUser", root, pwd=made.mongo_root_password.read_text().strip(),
                             roles=[{"role": "root", "db": "admin"}])  # fmt: skip
        for user in users:
            client[user["db"]].command("createUser", user["user"], pwd=user["pwd"], roles=user["roles"])
    setup.stop()
    mongo = _mongo(mongo_port, tmp / "mongodb", tmp / "mongodb.log", auth=True)

    redis_port = procs.free_port()
    server = procs.redis_process(redis_port, None, tmp / "redis.log")
    acl = compose["services"]["redis"]["command"]
    assert acl[acl.index("--aclfile") + 1] == "/run/secrets/redis_acl"
    redis_server = dataclasses.replace(server, argv=[*server.argv, "--aclfile", str(made.redis_acl)]).start()
    try:
        mongo.wait_listening()
        redis_server.wait_listening()
        yield Stores(made, dotenv, compose, mongo_port, redis_port)
    finally:
        redis_server.stop()
        mongo.stop()


def test_each_service_reads_and_writes_its_own_database_and_no_other(stores: Stores) -> None:
    databases = {s: __import__(f"{s}.config", fromlist=["Config"]).Config.mongodb_database for s in SERVICES}
    with MongoClient(f"mongodb://127.0.0.1:{stores.mongo_port}/?directConnection=true") as anonymous:
        with pytest.raises(OperationFailure) as refused:
            anonymous[databases["usuarios"]]["probe"].insert_one({"x": 1})
        assert refused.value.code == 13  # Unauthorized
    for service in SERVICES:
        with MongoClient(stores.env(service)["MONGODB_URI"]) as client:
            client[databases[service]]["probe"].insert_one({"by": service})
            assert client[databases[service]]["probe"].find_one({"by": service}) is not None
            for other in set(SERVICES) - {service}:
                with pytest.raises(OperationFailure) as refused:
                    client[databases[other]]["probe"].insert_one({"by": service})
                assert refused.value.code == 13, f"{service} wrote into {other}'s database"
                with pytest.raises(OperationFailure):
                    client[databases[other]]["probe"].find_one()
            with pytest.raises(OperationFailure):
                client.admin.command("createUser", f"{service}-admin", pwd="x" * 20, roles=["root"])


def test_redis_has_no_default_user_and_refuses_dangerous_commands(stores: Stores) -> None:
    with socket.create_connection(("127.0.0.1", stores.redis_port), timeout=5) as anonymous:
        anonymous.sendall(b"PING\r\n")
        assert anonymous.recv(100).startswith(b"-NOAUTH")
    for service in SERVICES:
        client = redis.Redis.from_url(stores.env(service)["REDIS_URL"])
        try:
            assert client.set("ratelimit:{probe}", "1")
            for command in (("FLUSHALL",), ("CONFIG", "GET", "*"), ("KEYS", "*"), ("DEBUG", "SLEEP", "0"), ("SHUTDOWN",)):
                with pytest.raises(redis.exceptions.NoPermissionError):
                    client.execute_command(*command)
            if service == "reservas":  # holds and the admission gate: every key
                assert client.set("probe", "1") and client.eval("return redis.call('GET', KEYS[1])", 1, "probe") == b"1"
            else:  # the rate limits' keys only: not reservas' holds
                with pytest.raises(redis.exceptions.NoPermissionError):
                    client.get("probe")
        finally:
            client.close()


@pytest.mark.parametrize("service", SERVICES)
async def test_each_service_rate_limits_through_its_redis_user(stores: Stores, service: str) -> None:
    """The limiter's Lua script runs under the service's ACL: a second call over a 1-call burst is refused
    (a script the ACL refused would let every call through instead)."""
    from infra.auth import Principal, Role  # noqa: PLC0415
    from infra.errors import ResourceExhausted  # noqa: PLC0415
    from infra.ratelimit import Limit, limiter_for  # noqa: PLC0415

    limiter = limiter_for(stores.env(service)["REDIS_URL"], {Role.CLIENTE: Limit(0.001, 1)})
    assert limiter is not None
    caller = Principal(sub=f"usuario:{uuid.uuid4().hex}", role=Role.CLIENTE, usuario_id="u")
    try:
        await limiter.admit(caller)
        with pytest.raises(ResourceExhausted):
            await limiter.admit(caller)
    finally:
        await limiter.close()


async def test_the_redis_health_check_passes_without_a_password(stores: Stores) -> None:
    """compose's check: an unauthenticated PING answered NOAUTH means Redis is up (and nothing answers: down)."""
    [check] = stores.compose["services"]["redis"]["healthcheck"]["test"][1:]
    cli = str(Path(procs.redis_server_binary()).with_name("redis-cli"))
    if not Path(cli).exists():
        pytest.skip("no redis-cli beside redis-server")

    def run(port: int) -> int:
        command = check.replace("redis-cli", f"{shlex.quote(cli)} -p {port}")
        return subprocess.run(["sh", "-c", command], capture_output=True, timeout=30).returncode  # noqa: S603, S607

    assert run(stores.redis_port) == 0
    assert run(procs.free_port()) != 0


async def test_a_wrong_password_is_logged_as_such_and_never_shown(
    stores: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    right = stores.dotenv["EVENTFLOW_MONGO_EVENTOS_PASSWORD"]
    uri = stores.env("eventos")["MONGODB_URI"].replace(right, "Wrong-password-0123")
    client = create_client(uri, "eventos")
    try:
        with caplog.at_level(logging.WARNING, logger="infra.mongo"):
            assert not await ping(client["eventflow_eventos"])
    finally:
        await client.close()
    [line] = [json.loads(JsonFormatter("eventos").format(r)) for r in caplog.records if r.name == "infra.mongo"]
    assert "AuthenticationFailed" in line["error"]
    assert "Wrong-password-0123" not in json.dumps(line)


async def test_a_purchase_runs_through_the_services_as_compose_connects_them(
    stores: Stores, start_app: Callable[[Awaitable[GrpcApp]], Awaitable[str]]
) -> None:
    from eventos.config import Config as EventosConfig  # noqa: PLC0415
    from eventos.server import create_app as create_eventos  # noqa: PLC0415
    from reservas.config import Config as ReservasConfig  # noqa: PLC0415
    from reservas.server import create_app as create_reservas  # noqa: PLC0415
    from usuarios.config import Config as UsuariosConfig  # noqa: PLC0415
    from usuarios.server import create_app as create_usuarios  # noqa: PLC0415

    from infra.auth import Role, TokenIssuer  # noqa: PLC0415
    from infra.keys import load_private_key  # noqa: PLC0415

    def env(service: str, **changes: str) -> dict[str, str]:
        return {**stores.env(service), f"{service.upper()}_PORT": "0", **changes}

    # An admin's token, signed with the issuer key compose-secrets made (`eventflow token --data-dir secrets`).
    issuer = stores.made.keys.issuer_private
    admin = TokenIssuer(load_private_key(issuer.read_bytes(), str(issuer))).mint(Role.ADMIN, "compose-test")
    auth = [("authorization", f"Bearer {admin}")]

    usuarios_address = await start_app(create_usuarios(UsuariosConfig.from_env(env("usuarios"))))
    eventos_address = await start_app(create_eventos(EventosConfig.from_env(env("eventos"))))
    reservas_env = env("reservas", USUARIOS_ADDR=usuarios_address, EVENTOS_ADDR=eventos_address)
    reservas_address = await start_app(create_reservas(ReservasConfig.from_env(reservas_env)))

    async with (
        grpc.aio.insecure_channel(usuarios_address) as u,
        grpc.aio.insecure_channel(eventos_address) as e,
        grpc.aio.insecure_channel(reservas_address) as r,
    ):
        usuario = await usuarios_pb2_grpc.UsuariosServiceStub(u).CreateUsuario(
            usuarios_pb2.CreateUsuarioRequest(usuario=usuarios_pb2.Usuario(
                tipo_documento="CI", nro_documento="41234567", nombre="Ana", apellido="Pérez",
                email=f"ana.{uuid.uuid4().hex[:6]}@example.com",
            )), timeout=10, metadata=auth,
        )  # fmt: skip
        evento = eventos_pb2.Evento(nombre="Hamlet", lugar="Teatro Solís", aforo_total=10, precio=1500, moneda="UYU")
        evento.fecha.FromDatetime(datetime.now(UTC) + timedelta(days=30))
        evento = await eventos_pb2_grpc.EventosServiceStub(e).CreateEvento(
            eventos_pb2.CreateEventoRequest(evento=evento), timeout=10, metadata=auth
        )
        reservas = reservas_pb2_grpc.ReservasServiceStub(r)
        reserva = await reservas.Reservar(
            reservas_pb2.ReservarRequest(usuario_id=usuario.id, evento_id=evento.id, cantidad=2,
                                         medio_pago="tok_visa", idempotency_key="compose-1"),
            timeout=30, metadata=auth,
        )  # fmt: skip
        assert reserva.estado == reservas_pb2.ESTADO_RESERVA_CONFIRMADA

        # The read model, which reservas' projector builds from a change stream in a transaction.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while True:
            listed = await reservas.ListReservas(
                reservas_pb2.ListReservasRequest(usuario_id=usuario.id), timeout=10, metadata=auth
            )
            if [x.id for x in listed.reservas] == [reserva.id]:
                break
            assert loop.time() < deadline, "the projector did not build the read model"
            await asyncio.sleep(0.2)

        cancelled = await reservas.CancelarReserva(
            reservas_pb2.CancelarReservaRequest(id=reserva.id), timeout=30, metadata=auth
        )
        assert cancelled.estado == reservas_pb2.ESTADO_RESERVA_CANCELADA
