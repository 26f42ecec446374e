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
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from infra import certs, procs, tls
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


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A deployment's certificates, as `eventflow certs` makes them (read-only for the tests)."""
    directory = tmp_path_factory.mktemp("tls") / "certs"
    certs.ensure(directory)
    return directory


@pytest.fixture(scope="session")
def stranger_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another deployment's certificates: a CA of its own, the same names."""
    directory = tmp_path_factory.mktemp("stranger") / "certs"
    certs.ensure(directory)
    return directory


@pytest.fixture
def db_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """A database name unique to this test: db_name("usuarios") -> "t17_usuarios"."""
    n = next(_counter)
    return lambda service: f"t{os.getpid()}_{n}_{service}"


async def wait_serving(address: str, timeout: float = 20.0, client_tls: tls.ClientTLS | None = None) -> None:
    """Wait until the server at `address` reports SERVING through the standard health service (over TLS with
    `client_tls`)."""
    async with tls.aio_channel(address, client_tls) as channel:
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


StartApp = Callable[..., Awaitable[str]]


@pytest.fixture
async def start_app() -> AsyncIterator[StartApp]:
    """Start an in-process GrpcApp bound to port 0, wait for SERVING, return its address; stopped after the test.

    start(make, client_tls=None): a server under TLS is asked for its health with `client_tls`.
    """
    started: list[GrpcApp] = []

    async def start(make: Awaitable[GrpcApp], client_tls: tls.ClientTLS | None = None) -> str:
        app = await make
        await app.start()
        started.append(app)
        address = f"127.0.0.1:{app.port}"
        await wait_serving(address, client_tls=client_tls)
        return address

    yield start
    for app in reversed(started):
        await app.stop(grace=0)


@pytest.fixture
def exporter() -> Iterator[Any]:
    """The spans of this test, in memory: an SDK tracer provider installed in infra.tracing for the test only
    (OpenTelemetry's global provider is left alone, so no other test is traced)."""
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415 - only the tracing tests need the SDK
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: PLC0415

    from infra import tracing  # noqa: PLC0415

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.install(provider)
    try:
        yield spans
    finally:
        tracing.uninstall()
        provider.shutdown()
