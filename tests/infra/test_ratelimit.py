"""The per-identity rate limit: a token bucket in a real redis-server, and RESOURCE_EXHAUSTED over gRPC."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from callers import ADMIN, AUTH, PAGE_TOKEN_KEY, cliente, open_channel
from eventflow.usuarios.v1 import usuarios_pb2, usuarios_pb2_grpc
from infra import procs
from infra.auth import Principal, Role
from infra.errors import ResourceExhausted, error_info
from infra.ratelimit import DEFAULT_LIMITS, Limit, RateLimiter, limits_from_env
from infra.redis_client import connect
from usuarios.config import Config
from usuarios.server import create_app


def _someone(role: Role = Role.CLIENTE) -> Principal:
    usuario = uuid.uuid4().hex
    return Principal(f"usuario:{usuario}", role, usuario if role is Role.CLIENTE else "")


async def test_a_burst_passes_then_calls_wait_for_the_bucket_to_refill(redis_url: str) -> None:
    limiter = RateLimiter(connect(redis_url), {Role.CLIENTE: Limit(rate=20, burst=3)})
    who = _someone()
    for _ in range(3):
        await limiter.admit(who)
    with pytest.raises(ResourceExhausted) as caught:
        await limiter.admit(who)
    assert caught.value.reason == "RATE_LIMITED"
    assert 0 < caught.value.retry_delay <= 0.05 + 0.01  # one token at 20 per second
    await limiter.admit(_someone())  # another identity has its own bucket
    await asyncio.sleep(0.12)  # two tokens back
    await limiter.admit(who)
    await limiter.admit(who)
    with pytest.raises(ResourceExhausted):
        await limiter.admit(who)
    await limiter.close()


async def test_concurrent_calls_never_take_more_than_the_bucket_holds(redis_url: str) -> None:
    # A generous timeout: this is about the script's atomicity; on a loaded machine 100 new connections may take
    # longer than the request path's 0.25 s, and a call that times out is let through (fail open), not refused.
    limiter = RateLimiter(connect(redis_url, timeout_seconds=5), {Role.ADMIN: Limit(rate=0.01, burst=25)})
    who = _someone(Role.ADMIN)
    results = await asyncio.gather(*(limiter.admit(who) for _ in range(100)), return_exceptions=True)
    assert sum(r is None for r in results) == 25
    assert all(isinstance(r, ResourceExhausted) for r in results if r is not None)
    await limiter.close()


async def test_a_role_without_a_limit_and_a_redis_that_does_not_answer_let_calls_through() -> None:
    nowhere = RateLimiter(connect(f"redis://127.0.0.1:{procs.free_port()}/0"), {Role.CLIENTE: Limit(1, 1)})
    for _ in range(5):
        await nowhere.admit(_someone())  # fails open: an outage of Redis refuses nobody
    unlimited = RateLimiter(connect("redis://127.0.0.1:1/0"), {Role.SERVICIO: None})
    await unlimited.admit(_someone(Role.SERVICIO))
    await nowhere.close()
    await unlimited.close()


def test_limits_from_the_environment() -> None:
    assert limits_from_env({}) == DEFAULT_LIMITS
    limits = limits_from_env({"EVENTFLOW_RATE_LIMIT_CLIENTE": "5/10", "EVENTFLOW_RATE_LIMIT_SERVICIO": "off"})
    assert limits[Role.CLIENTE] == Limit(5, 10) and limits[Role.SERVICIO] is None
    assert limits[Role.ADMIN] == DEFAULT_LIMITS[Role.ADMIN]
    for bad in ("5", "x/1", "0/10", "5/0", "-1/3"):
        with pytest.raises(ValueError, match="EVENTFLOW_RATE_LIMIT_ADMIN"):
            limits_from_env({"EVENTFLOW_RATE_LIMIT_ADMIN": bad})


async def test_over_the_limit_a_call_gets_resource_exhausted_with_retry_info(
    mongo_uri: str, redis_url: str, db_name: Callable[[str], str], start_app: Any
) -> None:
    config = Config(auth=AUTH, page_token_key=PAGE_TOKEN_KEY, port=0, bind_host="127.0.0.1", mongodb_uri=mongo_uri,
                    mongodb_database=db_name("usuarios"), redis_url=redis_url,
                    rate_limits={Role.CLIENTE: Limit(rate=0.5, burst=2), Role.ADMIN: None})  # fmt: skip
    address = await start_app(create_app(config))
    async with open_channel(address, ADMIN) as admin_channel:
        admin = usuarios_pb2_grpc.UsuariosServiceStub(admin_channel)
        usuario = usuarios_pb2.Usuario(tipo_documento="CI", nro_documento="1234567", nombre="Ana", apellido="Paz",
                                       email=f"{uuid.uuid4().hex[:8]}@example.com")  # fmt: skip
        created = await admin.CreateUsuario(usuarios_pb2.CreateUsuarioRequest(usuario=usuario), timeout=10)
        async with open_channel(address, cliente(created.id)) as channel:
            stub = usuarios_pb2_grpc.UsuariosServiceStub(channel)
            request = usuarios_pb2.GetUsuarioRequest(id=created.id)
            await stub.GetUsuario(request, timeout=10)
            await stub.GetUsuario(request, timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetUsuario(request, timeout=10)
        error = caught.value
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(error).reason == "RATE_LIMITED"  # type: ignore[union-attr]
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
        retry = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
        assert retry, "no RetryInfo detail"
        info = error_details_pb2.RetryInfo()
        retry[0].Unpack(info)
        assert 0 < info.retry_delay.ToMilliseconds() <= 2000
        # The admin, unlimited here, is not slowed by a cliente's flood.
        for _ in range(10):
            await admin.GetUsuario(usuarios_pb2.GetUsuarioRequest(id=created.id), timeout=10)
