"""gRPC adapter of UsuariosService: protobuf in, call the service, protobuf out.

`ERROR_TABLE` is the one place where usuarios' domain exceptions meet gRPC status codes;
the shared ErrorMappingInterceptor applies it and adds the ErrorInfo detail. A database
that cannot be reached is UNAVAILABLE (retryable), never INTERNAL.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import empty_pb2
from pymongo.errors import ConnectionFailure

from eventflow.usuarios.v1 import usuarios_pb2, usuarios_pb2_grpc
from infra.errors import DomainError, Unavailable
from usuarios.domain import (
    DocumentoTaken,
    EmailTaken,
    HasPurchases,
    InvalidUpdateMask,
    PurchaseAnnulled,
    UPDATABLE_FIELDS,
    Usuario,
    UsuarioNotFound,
    ValidationFailed,
)
from usuarios.service import UsuariosService

FULL_NAME = "eventflow.usuarios.v1.UsuariosService"
DOMAIN = "usuarios.eventflow"

ERROR_TABLE: dict[type[DomainError], grpc.StatusCode] = {
    ValidationFailed: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidUpdateMask: grpc.StatusCode.INVALID_ARGUMENT,
    UsuarioNotFound: grpc.StatusCode.NOT_FOUND,
    EmailTaken: grpc.StatusCode.ALREADY_EXISTS,
    DocumentoTaken: grpc.StatusCode.ALREADY_EXISTS,
    HasPurchases: grpc.StatusCode.FAILED_PRECONDITION,
    PurchaseAnnulled: grpc.StatusCode.FAILED_PRECONDITION,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
}

Reply = TypeVar("Reply")


def to_proto(usuario: Usuario) -> usuarios_pb2.Usuario:
    return usuarios_pb2.Usuario(
        id=usuario.id,
        tipo_documento=usuario.tipo_documento,
        nro_documento=usuario.nro_documento,
        nombre=usuario.nombre,
        apellido=usuario.apellido,
        email=usuario.email,
        historial_compras=list(usuario.historial_compras),
    )


def profile_of(message: usuarios_pb2.Usuario) -> dict[str, str]:
    return {name: getattr(message, name) for name in UPDATABLE_FIELDS}


def database_errors_unavailable(
    handler: Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Reply]],
) -> Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Reply]]:
    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Reply:
        try:
            return await handler(self, request, context)
        except ConnectionFailure:
            raise Unavailable("the usuarios database is unreachable; retry later") from None

    return wrapper


class UsuariosServicer(usuarios_pb2_grpc.UsuariosServiceServicer):
    def __init__(self, service: UsuariosService) -> None:
        self.service = service

    @database_errors_unavailable
    async def CreateUsuario(self, request, context):  # noqa: N802 - gRPC method names
        if not request.HasField("usuario"):
            raise ValidationFailed("usuario", "usuario is required")
        return to_proto(await self.service.create_usuario(profile_of(request.usuario)))

    @database_errors_unavailable
    async def GetUsuario(self, request, context):  # noqa: N802
        return to_proto(await self.service.get_usuario(request.id))

    @database_errors_unavailable
    async def ListUsuarios(self, request, context):  # noqa: N802
        usuarios, next_token = await self.service.list_usuarios(request.page_size, request.page_token)
        return usuarios_pb2.ListUsuariosResponse(usuarios=[to_proto(u) for u in usuarios], next_page_token=next_token)

    @database_errors_unavailable
    async def UpdateUsuario(self, request, context):  # noqa: N802
        if not request.HasField("usuario"):
            raise ValidationFailed("usuario", "usuario is required (with its id and the new values)")
        usuario = await self.service.update_usuario(
            request.usuario.id, profile_of(request.usuario), list(request.update_mask.paths)
        )
        return to_proto(usuario)

    @database_errors_unavailable
    async def DeleteUsuario(self, request, context):  # noqa: N802
        await self.service.delete_usuario(request.id)
        return empty_pb2.Empty()

    @database_errors_unavailable
    async def RegistrarCompra(self, request, context):  # noqa: N802
        added = await self.service.registrar_compra(request.usuario_id, request.reserva_id)
        return usuarios_pb2.RegistrarCompraResponse(
            usuario_id=request.usuario_id, reserva_id=request.reserva_id.strip(), registrada=added
        )

    @database_errors_unavailable
    async def AnularCompra(self, request, context):  # noqa: N802
        removed = await self.service.anular_compra(request.usuario_id, request.reserva_id)
        return usuarios_pb2.AnularCompraResponse(
            usuario_id=request.usuario_id, reserva_id=request.reserva_id.strip(), anulada=removed
        )
