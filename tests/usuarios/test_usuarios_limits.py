"""usuarios' limits (issue 8): the message size, the caps of every field, short errors, bounded pages."""

from __future__ import annotations

import dataclasses
from typing import Any

import grpc
import pytest

from eventflow.usuarios.v1 import usuarios_pb2 as pb
from eventflow.usuarios.v1 import usuarios_pb2_grpc
from infra.errors import error_info
from usuarios.config import Config
from usuarios.server import create_app
from callers import KEY_ENV, open_channel

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
    assert Config.from_env({**KEY_ENV, "GRPC_MAX_MESSAGE_BYTES": "65536"}).max_message_bytes == 65536
    address = await start_app(create_app(config))
    async with open_channel(address) as channel:
        stub = usuarios_pb2_grpc.UsuariosServiceStub(channel)
        error = await _code(stub.GetUsuario(pb.GetUsuarioRequest(id="x" * 70_000)))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# --- caps: a huge value is INVALID_ARGUMENT naming the field and its cap, in a short message ------------------

HUGE = "x" * 1_000_000  # under the 1 MiB message limit: it reaches the service
HUGE_UNICODE = "€" * 300_000  # 900 KB of three-byte characters


def _usuario(**fields: str) -> pb.Usuario:
    values = {"tipo_documento": "CI", "nro_documento": "12345678", "nombre": "Ana", "apellido": "Pérez",
              "email": "ana@example.com"}  # fmt: skip
    values.update(fields)
    return pb.Usuario(**values)


def _calls(huge: str) -> list[tuple[str, str, Any]]:
    """(rpc, field the error names, request) for every string of every request."""
    return [
        ("GetUsuario", "id", pb.GetUsuarioRequest(id=huge)),
        ("DeleteUsuario", "id", pb.DeleteUsuarioRequest(id=huge)),
        ("UpdateUsuario", "usuario.id", pb.UpdateUsuarioRequest(usuario=_usuario(id=huge))),
        ("RegistrarCompra", "usuario_id", pb.RegistrarCompraRequest(usuario_id=huge, reserva_id="r")),
        ("RegistrarCompra", "reserva_id", pb.RegistrarCompraRequest(usuario_id="u", reserva_id=huge)),
        ("AnularCompra", "usuario_id", pb.AnularCompraRequest(usuario_id=huge, reserva_id="r")),
        ("AnularCompra", "reserva_id", pb.AnularCompraRequest(usuario_id="u", reserva_id=huge)),
        ("ListUsuarios", "page_token", pb.ListUsuariosRequest(page_token=huge)),
        *[
            ("CreateUsuario", field, pb.CreateUsuarioRequest(usuario=_usuario(**{field: huge})))
            for field in ("tipo_documento", "nro_documento", "nombre", "apellido", "email")
        ],
        *[
            ("UpdateUsuario", field, pb.UpdateUsuarioRequest(usuario=_usuario(id="u", **{field: huge})))
            for field in ("tipo_documento", "nro_documento", "nombre", "apellido", "email")
        ],
    ]


@pytest.mark.parametrize("huge", [HUGE, HUGE_UNICODE], ids=["ascii", "unicode"])
async def test_every_huge_string_is_invalid_argument_with_a_short_message(usuarios, huge: str) -> None:
    for rpc, field, request in _calls(huge):
        error = await _code(getattr(usuarios, rpc)(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (rpc, field, error.code(), error.details()[:200])
        info = error_info(error)
        assert info is not None and info.metadata["field"] == field, (rpc, field, dict(info.metadata) if info else None)
        assert len(error.details()) < 200, (rpc, field)
        assert huge[:50] not in error.details(), (rpc, field)  # never an echo of the value
        assert all(len(value) <= 200 for value in info.metadata.values())


async def test_the_error_names_the_cap(usuarios) -> None:
    error = await _code(usuarios.GetUsuario(pb.GetUsuarioRequest(id=HUGE)))
    assert "at most 128 characters" in error.details() and "got 1000000" in error.details()
    assert error_info(error).metadata["max"] == "128"


async def test_update_masks_are_capped(usuarios) -> None:
    too_many = pb.UpdateUsuarioRequest(usuario=_usuario(id="u"))
    too_many.update_mask.paths.extend(["nombre"] * 1000)
    error = await _code(usuarios.UpdateUsuario(too_many))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "at most 16 paths" in error.details()
    too_long = pb.UpdateUsuarioRequest(usuario=_usuario(id="u"))
    too_long.update_mask.paths.append("n" * 100_000)
    error = await _code(usuarios.UpdateUsuario(too_long))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and len(error.details()) < 200


# --- pages are bounded by bytes -------------------------------------------------------------------------------


async def test_a_page_of_big_usuarios_stays_under_the_message_limit(start_app, usuarios_config: Config) -> None:
    """page_size 500 of usuarios with every field at its cap would pass a 64 KiB limit: the page stops before
    it, and the next_page_token goes on from there (no usuario missed or repeated)."""
    limit = 64 * 1024
    address = await start_app(create_app(dataclasses.replace(usuarios_config, max_message_bytes=limit)))
    async with open_channel(address) as channel:
        stub = usuarios_pb2_grpc.UsuariosServiceStub(channel)

        async def create(n: int) -> str:
            email = f"{n:04d}" + "a" * 60 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 55 + ".uy"
            usuario = _usuario(nro_documento=f"{n:020d}", nombre="n" * 100, apellido="a" * 100, email=email)
            return (await stub.CreateUsuario(pb.CreateUsuarioRequest(usuario=usuario))).id

        created = [await create(n) for n in range(260)]
        listed, token, pages = [], "", 0
        while True:
            reply = await stub.ListUsuarios(pb.ListUsuariosRequest(page_size=500, page_token=token))
            assert reply.ByteSize() <= limit
            listed.extend(u.id for u in reply.usuarios)
            pages, token = pages + 1, reply.next_page_token
            if not token:
                break
        assert listed == created and pages >= 3
