"""The usuarios server as a whole: configuration, health, reflection, database outages, graceful shutdown,
and `python -m usuarios` as its own process."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from eventflow.usuarios.v1 import usuarios_pb2 as pb
from eventflow.usuarios.v1 import usuarios_pb2_grpc
from infra import procs
from infra.errors import error_info
from infra.keys import KeyConfigError
from usuarios.config import Config
from usuarios.server import create_app
from usuarios.servicer import FULL_NAME as SERVICE_NAME
from usuarios.service import UsuariosService
from callers import AUTH, KEY_ENV, KEY_ENV_WITHOUT_PAGE_TOKEN_KEY, PAGE_TOKEN_KEY, open_channel


async def health(address: str, service: str = "") -> int:
    async with open_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return reply.status


async def wait_serving(address: str, timeout: float = 60) -> None:
    """Poll the health service until SERVING (the suite's fixture does the same for the servers it starts)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            if await health(address) == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        assert asyncio.get_running_loop().time() < deadline, f"{address} never reported SERVING"
        await asyncio.sleep(0.05)


# --- configuration -------------------------------------------------------------------------------


def test_config_defaults_and_environment() -> None:
    assert Config.from_env(KEY_ENV) == Config(
        port=50051,
        bind_host="127.0.0.1",
        mongodb_uri="mongodb://localhost:27017/?directConnection=true",
        mongodb_database="eventflow_usuarios",
        page_token_key=PAGE_TOKEN_KEY,
        metrics_port=9451,  # from the environment; a Config built in code serves no /metrics
    )
    env = {**KEY_ENV, "USUARIOS_PORT": "6001", "GRPC_BIND_HOST": "127.0.0.1", "MONGODB_URI": "mongodb://db:27017",
           "USUARIOS_MONGODB_DATABASE": "u", "EVENTOS_PORT": "7000"}  # fmt: skip
    config = Config.from_env(env)
    assert (config.port, config.address, config.mongodb_uri, config.mongodb_database) == (
        6001, "127.0.0.1:6001", "mongodb://db:27017", "u",
    )  # fmt: skip


def test_config_without_keys_is_refused_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="EVENTFLOW_ISSUER_PUBLIC_KEY .*no default keys"):
        Config.from_env({})
    with pytest.raises(ValueError, match="EVENTFLOW_SERVICE_PUBLIC_KEY"):
        Config.from_env({"EVENTFLOW_ISSUER_PUBLIC_KEY_FILE": KEY_ENV["EVENTFLOW_ISSUER_PUBLIC_KEY_FILE"]})
    with pytest.raises(ValueError, match="EVENTFLOW_ISSUER_PUBLIC_KEY_FILE=/nowhere cannot be read"):
        Config.from_env({"EVENTFLOW_ISSUER_PUBLIC_KEY_FILE": "/nowhere"})


@pytest.mark.parametrize("port", ["http", "-1", "70000"])
def test_config_rejects_a_bad_port_naming_the_variable(port: str) -> None:
    with pytest.raises(ValueError, match="USUARIOS_PORT"):
        Config.from_env({"USUARIOS_PORT": port, **KEY_ENV})


def test_an_empty_port_is_the_default_as_for_eventflow_up() -> None:
    assert Config.from_env({"USUARIOS_PORT": "", **KEY_ENV}).port == 50051  # infra.ports: one meaning everywhere


def test_config_without_a_page_token_key_names_the_variable() -> None:
    with pytest.raises(KeyConfigError, match="EVENTFLOW_PAGE_TOKEN_KEY"):
        Config.from_env(KEY_ENV_WITHOUT_PAGE_TOKEN_KEY)
    config = Config.from_env({**KEY_ENV_WITHOUT_PAGE_TOKEN_KEY, "EVENTFLOW_PAGE_TOKEN_KEY": "k" * 32})
    assert "page_token_key" not in repr(config)  # a secret


async def test_no_server_without_a_page_token_key(usuarios_config: Config) -> None:
    """A Config built in code without the key builds no server (nothing is connected or bound first)."""
    with pytest.raises(KeyConfigError, match="EVENTFLOW_PAGE_TOKEN_KEY"):
        await create_app(dataclasses.replace(usuarios_config, page_token_key=b""))


# --- health and reflection -----------------------------------------------------------------------


async def test_health_serving_and_reflection_lists_the_service(usuarios_address: str) -> None:
    assert await health(usuarios_address) == health_pb2.HealthCheckResponse.SERVING
    assert await health(usuarios_address, SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING
    async with open_channel(usuarios_address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = [s.name async for reply in call for s in reply.list_services_response.service]
    assert SERVICE_NAME in names and "grpc.health.v1.Health" in names


async def test_not_serving_until_the_database_answers_then_serving(
    tmp_path: Path, db_name, rpc_error
) -> None:
    port = procs.free_port()
    config = Config(auth=AUTH, port=0, bind_host="127.0.0.1", mongodb_uri=f"mongodb://127.0.0.1:{port}/?directConnection=true",
                    mongodb_database=db_name("usuarios"), page_token_key=PAGE_TOKEN_KEY)  # fmt: skip
    app = await create_app(config)
    await app.start()
    address = f"127.0.0.1:{app.port}"
    mongo = None
    try:
        assert await health(address) == health_pb2.HealthCheckResponse.NOT_SERVING
        async with open_channel(address) as channel:
            stub = usuarios_pb2_grpc.UsuariosServiceStub(channel)
            # No database: a retryable UNAVAILABLE, not INTERNAL (after the driver's server-selection timeout).
            await rpc_error(stub.GetUsuario(pb.GetUsuarioRequest(id="x")), grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")
            mongo = procs.mongo_process(port, ":memory:", tmp_path / "mongodb.log").start()
            await asyncio.to_thread(mongo.wait_listening)
            await wait_serving(address)
            # SERVING means the indexes exist: uniqueness holds from the first write.
            usuario = pb.Usuario(tipo_documento="DNI", nro_documento="1", nombre="A", apellido="B", email="a@b.uy")
            await stub.CreateUsuario(pb.CreateUsuarioRequest(usuario=usuario))
            usuario.nro_documento = "2"
            await rpc_error(stub.CreateUsuario(pb.CreateUsuarioRequest(usuario=usuario)), grpc.StatusCode.ALREADY_EXISTS, "EMAIL_TAKEN")
    finally:
        await app.stop(grace=0)
        if mongo is not None:
            await asyncio.to_thread(mongo.stop)


# --- graceful shutdown ---------------------------------------------------------------------------


async def test_graceful_shutdown_finishes_an_in_flight_call(usuarios_config: Config, nuevo_usuario, monkeypatch) -> None:
    app = await create_app(usuarios_config)
    await app.start()
    address = f"127.0.0.1:{app.port}"
    try:
        await wait_serving(address)
        async with open_channel(address) as channel:
            stub = usuarios_pb2_grpc.UsuariosServiceStub(channel)
            ana = await stub.CreateUsuario(pb.CreateUsuarioRequest(usuario=nuevo_usuario()))

            entered, release = asyncio.Event(), asyncio.Event()
            original = UsuariosService.get_usuario

            async def held(self: UsuariosService, usuario_id: str):
                entered.set()
                await release.wait()
                return await original(self, usuario_id)

            monkeypatch.setattr(UsuariosService, "get_usuario", held)
            in_flight = asyncio.ensure_future(stub.GetUsuario(pb.GetUsuarioRequest(id=ana.id), timeout=60))
            await entered.wait()
            stopping = asyncio.create_task(app.stop(grace=30))
            # Shutdown has begun when health stops saying SERVING (or the server refuses new calls).
            while True:
                try:
                    if await health(address) != health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.aio.AioRpcError:
                    break
                await asyncio.sleep(0.02)
            assert not in_flight.done()
            release.set()
            assert await in_flight == ana
            await stopping
    finally:
        release.set()
        await app.stop(grace=0)


# --- python -m usuarios --------------------------------------------------------------------------


async def test_python_dash_m_usuarios_serves_and_exits_cleanly_on_sigterm(
    mongo_uri: str, db_name, tmp_path: Path, nuevo_usuario
) -> None:
    port = procs.free_port()
    env = {**os.environ, **KEY_ENV, "USUARIOS_PORT": str(port), "GRPC_BIND_HOST": "127.0.0.1",
           "MONGODB_URI": mongo_uri, "USUARIOS_MONGODB_DATABASE": db_name("usuarios")}  # fmt: skip
    log_path = tmp_path / "usuarios.log"
    process = procs.service_process("usuarios", port, env, log_path=log_path).start()
    try:
        await asyncio.to_thread(process.wait_listening, 60)
        address = f"127.0.0.1:{port}"
        await wait_serving(address)
        async with open_channel(address) as channel:
            stub = usuarios_pb2_grpc.UsuariosServiceStub(channel)
            created = await stub.CreateUsuario(pb.CreateUsuarioRequest(usuario=nuevo_usuario()))
            assert await stub.GetUsuario(pb.GetUsuarioRequest(id=created.id)) == created
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetUsuario(pb.GetUsuarioRequest(id="nope"))
            info = error_info(caught.value)
            assert info is not None and info.domain == "usuarios.eventflow" and info.reason == "USUARIO_NOT_FOUND"
        process.signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.proc.wait, 30) == 0
    finally:
        await asyncio.to_thread(process.stop)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    assert lines and all(line["service"] == "usuarios" for line in lines)
    messages = [line["msg"] for line in lines]
    assert "usuario created" in messages and "stopped" in messages
