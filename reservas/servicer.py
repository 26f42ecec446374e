"""gRPC adapter of ReservasService: protobuf in, call the service, protobuf out.

`ERROR_TABLE` is the one place where reservas' exceptions meet gRPC status codes (the shared
ErrorMappingInterceptor applies it on top of the default table and adds the ErrorInfo
detail). reservas' own database being unreachable is UNAVAILABLE, never INTERNAL.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
from pymongo.errors import PyMongoError

from eventflow.reservas.v1 import reservas_pb2, reservas_pb2_grpc
from infra.errors import DomainError, InvalidArgument, Unavailable
from infra.seats import seat_labels
from reservas.domain import ConcurrencyConflict, Solicitud
from reservas.mapping import event_to_pb, reserva_to_pb
from reservas.payments import PaymentTimeout
from reservas.projections import messages as read_side
from reservas.projections.queries import ReservasQueries
from reservas.saga.saga import SagaInternalError
from reservas.service import ReservasService

FULL_NAME = "eventflow.reservas.v1.ReservasService"
DOMAIN = "reservas.eventflow"

ERROR_TABLE: dict[type[DomainError], grpc.StatusCode] = {
    PaymentTimeout: grpc.StatusCode.FAILED_PRECONDITION,
    ConcurrencyConflict: grpc.StatusCode.ABORTED,
    SagaInternalError: grpc.StatusCode.INTERNAL,
}

Reply = TypeVar("Reply")


def database_errors(method: Callable[..., Awaitable[Reply]]) -> Callable[..., Awaitable[Reply]]:
    """reservas' MongoDB not answering is UNAVAILABLE (retryable), not INTERNAL."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Reply:
        try:
            return await method(self, request, context)
        except PyMongoError as error:
            raise Unavailable(
                "reservas' database is unavailable; try again shortly", reason="MONGODB_UNAVAILABLE"
            ) from error

    return wrapper


def to_datetime(field: str, value: Any) -> datetime:
    try:
        return value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as error:
        raise InvalidArgument(f"{field} is not a valid timestamp: {error}", metadata={"field": field}) from error


class ReservasServicer(reservas_pb2_grpc.ReservasServiceServicer):
    def __init__(self, service: ReservasService, queries: ReservasQueries) -> None:
        self.service = service
        self.queries = queries

    @database_errors
    async def Reservar(  # noqa: N802 - gRPC method name
        self, request: reservas_pb2.ReservarRequest, context: grpc.aio.ServicerContext
    ) -> reservas_pb2.Reserva:
        solicitud = Solicitud(
            usuario_id=request.usuario_id,
            evento_id=request.evento_id,
            cantidad=request.cantidad,
            asientos=seat_labels(request.asientos),  # as eventos keeps them: one seat, one hold, one fingerprint
            medio_pago=request.medio_pago,
            idempotency_key=request.idempotency_key,
        )
        return reserva_to_pb(await self.service.reservar(solicitud, context.time_remaining()))

    @database_errors
    async def GetReserva(  # noqa: N802
        self, request: reservas_pb2.GetReservaRequest, context: grpc.aio.ServicerContext
    ) -> reservas_pb2.Reserva:
        as_of = to_datetime("as_of", request.as_of) if request.HasField("as_of") else None
        return reserva_to_pb(await self.service.get_reserva(request.id, as_of))

    @database_errors
    async def CancelarReserva(  # noqa: N802
        self, request: reservas_pb2.CancelarReservaRequest, context: grpc.aio.ServicerContext
    ) -> reservas_pb2.Reserva:
        return reserva_to_pb(await self.service.cancelar_reserva(request.id, context.time_remaining()))

    @database_errors
    async def GetHistorialReserva(  # noqa: N802
        self, request: reservas_pb2.GetHistorialReservaRequest, context: grpc.aio.ServicerContext
    ) -> reservas_pb2.GetHistorialReservaResponse:
        events, token = await self.service.get_historial(request.reserva_id, request.page_size, request.page_token)
        return reservas_pb2.GetHistorialReservaResponse(eventos=[event_to_pb(e) for e in events], next_page_token=token)

    # ---- read model: ListReservas and GetEstadisticasEvento (reservas/projections) -------------------

    @database_errors
    async def ListReservas(  # noqa: N802
        self, request: reservas_pb2.ListReservasRequest, context: grpc.aio.ServicerContext
    ) -> reservas_pb2.ListReservasResponse:
        return await read_side.list_reservas(self.queries, request)

    @database_errors
    async def GetEstadisticasEvento(  # noqa: N802
        self, request: reservas_pb2.GetEstadisticasEventoRequest, context: grpc.aio.ServicerContext
    ) -> reservas_pb2.EstadisticasEvento:
        return await read_side.get_estadisticas_evento(self.queries, request)
