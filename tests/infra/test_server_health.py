"""The health monitor follows the service's check, also when the check itself gets stuck (issue 9).

reservas' check pings MongoDB through the same client as its sagas; when that client hung, health stayed
at its last value and nothing was logged. A check that does not answer in time counts as failed.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from infra.server import create_server
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
