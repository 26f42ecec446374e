"""Fixtures shared by the whole suite: real servers, never fakes.

A SecantusDB server (MongoDB wire protocol) and a redis-server are started once per
test session on free ports, as separate processes. Tests isolate themselves by database
name (`db_name`), not by starting servers of their own.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from infra import procs
from infra.server import GrpcApp

_counter = itertools.count()


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def mongo_uri(logs_dir: Path) -> Iterator[str]:
    """A real SecantusDB server for the whole session (or MONGODB_URI, to run against a real mongod)."""
    if os.environ.get("EVENTFLOW_TEST_MONGODB_URI"):
        yield os.environ["EVENTFLOW_TEST_MONGODB_URI"]
        return
    port = procs.free_port()
    server = procs.mongo_process(port, ":memory:", logs_dir / "mongodb.log").start()
    server.wait_listening()
    yield f"mongodb://127.0.0.1:{port}/?directConnection=true"
    server.stop()


@pytest.fixture(scope="session")
def redis_url(logs_dir: Path) -> Iterator[str]:
    """A real redis-server for the whole session (or EVENTFLOW_TEST_REDIS_URL)."""
    if os.environ.get("EVENTFLOW_TEST_REDIS_URL"):
        yield os.environ["EVENTFLOW_TEST_REDIS_URL"]
        return
    port = procs.free_port()
    server = procs.redis_process(port, None, logs_dir / "redis.log").start()
    server.wait_listening()
    yield f"redis://127.0.0.1:{port}/0"
    server.stop()


@pytest.fixture
def db_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """A database name unique to this test: db_name("usuarios") -> "t17_usuarios"."""
    n = next(_counter)
    return lambda service: f"t{os.getpid()}_{n}_{service}"


async def wait_serving(address: str, timeout: float = 20.0) -> None:
    """Wait until the server at `address` reports SERVING through the standard health service."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{address} did not report SERVING within {timeout}s")
            await asyncio.sleep(0.05)


StartApp = Callable[[Awaitable[GrpcApp]], Awaitable[str]]


@pytest.fixture
async def start_app() -> AsyncIterator[StartApp]:
    """Start an in-process GrpcApp bound to port 0, wait for SERVING, return its address; stopped after the test."""
    started: list[GrpcApp] = []

    async def start(make: Awaitable[GrpcApp]) -> str:
        app = await make
        await app.start()
        started.append(app)
        address = f"127.0.0.1:{app.port}"
        await wait_serving(address)
        return address

    yield start
    for app in reversed(started):
        await app.stop(grace=0)
