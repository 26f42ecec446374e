"""usuarios' limits (issue 8): the message size, the caps of every field, short errors, bounded pages."""

from __future__ import annotations

import dataclasses
from typing import Any

import grpc
import pytest

from eventflow.usuarios.v1 import usuarios_pb2 as pb
from eventflow.usuarios.v1 import usuarios_pb2_grpc
from usuarios.config import Config
from usuarios.server import create_app

MIB = 1 << 20


async def _code(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_a_request_over_the_message_limit_is_resource_exhausted(usuarios) -> None:
    error = await _code(usuarios.GetUsuario(pb.GetUsuarioRequest(id="x" * (2 * MIB))))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_the_message_limit_is_configurable(start_app, usuarios_config: Config) -> None:
    config = dataclasses.replace(usuarios_config, max_message_bytes=64 * 1024)
    assert Config.from_env({"GRPC_MAX_MESSAGE_BYTES": "65536", "EVENTFLOW_PAGE_TOKEN_KEY": "k" * 32}).max_message_bytes == 65536
    address = await start_app(create_app(config))
    async with grpc.aio.insecure_channel(address) as channel:
        stub = usuarios_pb2_grpc.UsuariosServiceStub(channel)
        error = await _code(stub.GetUsuario(pb.GetUsuarioRequest(id="x" * 70_000)))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
