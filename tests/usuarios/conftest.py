"""Fixtures of the usuarios tests: a real usuarios server on a fresh database, and a stub connected to it."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from eventflow.usuarios.v1 import usuarios_pb2, usuarios_pb2_grpc
from infra.errors import error_info
from usuarios.config import Config
from usuarios.server import create_app
from callers import AUTH, PAGE_TOKEN_KEY, open_channel

_serial = itertools.count(1)


@pytest.fixture
def usuarios_config(mongo_uri: str, db_name: Callable[[str], str]) -> Config:
    """A config for an in-process server on a free port and a database of this test's own."""
    return Config(
        auth=AUTH, page_token_key=PAGE_TOKEN_KEY, port=0, bind_host="127.0.0.1", mongodb_uri=mongo_uri,
        mongodb_database=db_name("usuarios"),
    )


@pytest.fixture
async def usuarios_address(start_app: Any, usuarios_config: Config) -> str:
    """The address of a started, SERVING usuarios server (stopped after the test)."""
    return await start_app(create_app(usuarios_config))


@pytest.fixture
async def usuarios(usuarios_address: str) -> AsyncIterator[usuarios_pb2_grpc.UsuariosServiceStub]:
    """A stub on a real channel to a usuarios server with an empty database."""
    async with open_channel(usuarios_address) as channel:
        yield usuarios_pb2_grpc.UsuariosServiceStub(channel)


def make_usuario(**overrides: str) -> usuarios_pb2.Usuario:
    """A valid Usuario message, unique within the test session unless fields are overridden."""
    n = next(_serial)
    fields = {
        "tipo_documento": "DNI",
        "nro_documento": f"{n:08d}",
        "nombre": "Ana",
        "apellido": "Pérez",
        "email": f"ana.perez{n}@example.com",
    }
    fields.update(overrides)
    return usuarios_pb2.Usuario(**fields)


@pytest.fixture
def nuevo_usuario() -> Callable[..., usuarios_pb2.Usuario]:
    """nuevo_usuario(email="x@y.uy") -> a valid Usuario message with that override."""
    return make_usuario


RpcError = Callable[..., Awaitable[grpc.aio.AioRpcError]]


@pytest.fixture
def rpc_error() -> RpcError:
    """await rpc_error(call, code, reason, field=None): the call fails so, with that ErrorInfo; returns the error."""

    async def check(
        call: Awaitable[Any], code: grpc.StatusCode, reason: str, field: str | None = None
    ) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        error = caught.value
        assert error.code() == code, error.details()
        info = error_info(error)
        assert info is not None, "the status carries no ErrorInfo"
        assert info.reason == reason, (info.reason, error.details())
        assert info.domain == "usuarios.eventflow"
        if field is not None:
            assert info.metadata.get("field") == field, (dict(info.metadata), error.details())
        assert error.details(), "the status has no message"
        return error

    return check
