"""The health monitor follows the service's check, also when the check itself gets stuck (issue 9); nothing is
served before the service's setup has finished (issue 11).

reservas' check pings MongoDB through the same client as its sagas; when that client hung, health stayed
at its last value and nothing was logged. A check that does not answer in time counts as failed.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eventflow.usuarios.v1 import usuarios_pb2, usuarios_pb2_grpc
from infra.server import ServiceBinding, create_server
from callers import AUTH, open_channel

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def until(stub: health_pb2_grpc.HealthStub, status: int, timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)).status != status:
        assert loop.time() < deadline, f"health did not become {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}"
        await asyncio.sleep(0.02)


async def test_a_check_that_hangs_is_not_serving_until_it_answers(caplog: pytest.LogCaptureFixture) -> None:
    answering = asyncio.Event()
    answering.set()
    running = [0]
    most = 0

    async def check() -> bool:
        nonlocal most
        running[0] += 1
        most = max(most, running[0])
        try:
            await answering.wait()  # a store client that stopped answering
        finally:
            running[0] -= 1
        return True

    app = await create_server(
        bindings=[], address="127.0.0.1:0", domain="test.eventflow", health_check=check,
        check_interval=0.05, check_timeout=0.2, auth=AUTH,
    )  # fmt: skip
    await app.start()
    try:
        async with open_channel(f"127.0.0.1:{app.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            await until(stub, SERVING)
            with caplog.at_level(logging.INFO, logger="infra.server"):
                answering.clear()
                await until(stub, NOT_SERVING)
                answering.set()
                await until(stub, SERVING)
        assert most == 1  # the stuck check was waited for, not started again beside it
        messages = [r.getMessage() for r in caplog.records]
        assert messages.count("health check has not answered") == 1
        assert "health check answered again" in messages
    finally:
        await app.stop(grace=0)


class _Usuarios(usuarios_pb2_grpc.UsuariosServiceServicer):
    """Answers GetUsuario: enough of a service to see whether its calls are served."""

    async def GetUsuario(self, request: usuarios_pb2.GetUsuarioRequest, context: object) -> usuarios_pb2.Usuario:  # noqa: N802
        return usuarios_pb2.Usuario(id=request.id)


async def test_setup_finishes_before_anything_is_served_and_starts_over_until_it_does() -> None:
    """Setup (indexes, migrations) runs once the check passes; until it has finished, the service's calls are
    UNAVAILABLE and health NOT_SERVING. A setup that fails (its store went away half-way) starts over."""
    attempts = 0
    release = asyncio.Event()

    async def setup() -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("the store went away half-way")
        await release.wait()

    async def check() -> bool:
        return True

    binding = ServiceBinding(
        "eventflow.usuarios.v1.UsuariosService", usuarios_pb2_grpc.add_UsuariosServiceServicer_to_server, _Usuarios()
    )
    app = await create_server(
        bindings=[binding], address="127.0.0.1:0", domain="usuarios.eventflow", health_check=check, setup=setup,
        check_interval=0.05, auth=AUTH,
    )  # fmt: skip
    await app.start()
    try:
        async with open_channel(f"127.0.0.1:{app.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            usuarios = usuarios_pb2_grpc.UsuariosServiceStub(channel)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while attempts < 2:  # the first setup failed; the second is under way
                assert loop.time() < deadline, "setup was not tried again after it failed"
                await asyncio.sleep(0.02)
            assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=5)).status == NOT_SERVING
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await usuarios.GetUsuario(usuarios_pb2.GetUsuarioRequest(id="u1"), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "starting" in (refused.value.details() or "")
            release.set()
            await until(health, SERVING)
            assert (await usuarios.GetUsuario(usuarios_pb2.GetUsuarioRequest(id="u1"), timeout=5)).id == "u1"
        assert attempts == 2
    finally:
        await app.stop(grace=0)
