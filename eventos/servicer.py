"""Protobuf in, use case, protobuf out. Errors are the domain's (see eventos.domain): the shared
ErrorMappingInterceptor maps each to its status code along its class hierarchy.

No answer passes the reply limit: an event's seat lists are left out of an answer they would make too
big (or refused, SEAT_MAP_TOO_LARGE, when the read_mask names them), and ListAsientos pages them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import grpc
from google.protobuf import empty_pb2, timestamp_pb2

from eventflow.eventos.v1 import eventos_pb2, eventos_pb2_grpc
from eventos import domain
from eventos.domain import Evento, EventoDraft, FilaAsientos, InventoryChange, ReservaRequest
from eventos.service import EventoService, Seat

FULL_NAME = "eventflow.eventos.v1.EventosService"
DOMAIN = "eventos.eventflow"


def to_datetime(field: str, message: eventos_pb2.Evento | eventos_pb2.ListEventosRequest) -> datetime | None:
    """The timestamp `field` of `message`, or None when it is not set."""
    if not message.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, field)
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise domain.invalid(field, "is not a valid timestamp (years 0001 to 9999)") from None


def to_draft(evento: eventos_pb2.Evento) -> EventoDraft:
    return EventoDraft(
        nombre=evento.nombre,
        fecha=to_datetime("fecha", evento),
        lugar=evento.lugar,
        aforo_total=evento.aforo_total,
        precio=evento.precio,
        moneda=evento.moneda,
        asientos=tuple(evento.asientos),
        filas=tuple(FilaAsientos(f.fila, f.desde, f.hasta) for f in evento.filas),
        max_por_usuario=evento.max_por_usuario,
    )


def to_proto(evento: Evento, fields: Sequence[str] = domain.READABLE_FIELDS) -> eventos_pb2.Evento:
    """The event as a message with only `fields` set (field names of Evento, see domain.READABLE_FIELDS)."""
    values = {
        "id": evento.id,
        "nombre": evento.nombre,
        "lugar": evento.lugar,
        "aforo_total": evento.aforo_total,
        "entradas_disponibles": evento.entradas_disponibles,
        "precio": evento.precio,
        "moneda": evento.moneda,
        "asientos": evento.asientos,
        "asientos_disponibles": evento.asientos_disponibles,
        "inventario_version": evento.inventario_version,
        "con_asientos": evento.seated,
        "max_por_usuario": evento.max_por_usuario,
    }
    message = eventos_pb2.Evento(**{f: values[f] for f in fields if f in values})
    if "fecha" in fields:
        message.fecha.FromDatetime(evento.fecha)
    return message


def to_asiento(seat: Seat) -> eventos_pb2.Asiento:
    etiqueta, disponible = seat
    return eventos_pb2.Asiento(etiqueta=etiqueta, disponible=disponible)


def to_change_fields(change: InventoryChange) -> dict[str, object]:
    """The fields ReservarEntradasResponse and LiberarEntradasResponse share."""
    return {
        "evento_id": change.evento_id,
        "reserva_id": change.reserva_id,
        "cantidad": change.cantidad,
        "asientos": change.asientos,
        "entradas_disponibles": change.entradas_disponibles,
        "inventario_version": change.inventario_version,
    }


class EventosServicer(eventos_pb2_grpc.EventosServiceServicer):
    def __init__(self, service: EventoService, reply_limit: int) -> None:
        """`reply_limit`: the most bytes an answer may take (see infra.limits.reply_budget)."""
        self.service = service
        self.reply_limit = reply_limit

    def answer(
        self, evento: Evento, fields: Sequence[str] = domain.READABLE_FIELDS, named: bool = False
    ) -> eventos_pb2.Evento:
        """The event with `fields`, within the reply limit: seat lists too big for it are left out (con_asientos
        still tells), or refused when the caller `named` them in a read_mask."""
        message = to_proto(evento, fields)
        if message.ByteSize() <= self.reply_limit:
            return message
        seat_fields = [f for f in fields if f in domain.SEAT_FIELDS]
        if named and seat_fields:
            raise domain.seat_map_too_large(evento, seat_fields)
        return to_proto(evento, [f for f in fields if f not in domain.SEAT_FIELDS])

    async def CreateEvento(
        self, request: eventos_pb2.CreateEventoRequest, context: grpc.aio.ServicerContext
    ) -> eventos_pb2.Evento:
        return self.answer(await self.service.create(to_draft(request.evento)))

    async def GetEvento(self, request: eventos_pb2.GetEventoRequest, context: grpc.aio.ServicerContext) -> eventos_pb2.Evento:
        fields = domain.validate_read_mask(list(request.read_mask.paths))
        return self.answer(await self.service.get(request.id, fields), fields, named=bool(request.read_mask.paths))

    async def ListAsientos(
        self, request: eventos_pb2.ListAsientosRequest, context: grpc.aio.ServicerContext
    ) -> eventos_pb2.ListAsientosResponse:
        page = await self.service.list_asientos(
            request.evento_id,
            page_size=request.page_size,
            page_token=request.page_token,
            solo_disponibles=request.solo_disponibles,
        )
        return eventos_pb2.ListAsientosResponse(
            asientos=[to_asiento(seat) for seat in page.asientos], next_page_token=page.next_page_token
        )

    async def ListEventos(
        self, request: eventos_pb2.ListEventosRequest, context: grpc.aio.ServicerContext
    ) -> eventos_pb2.ListEventosResponse:
        page = await self.service.list(
            page_size=request.page_size,
            page_token=request.page_token,
            lugar=request.lugar.strip() or None,
            desde=to_datetime("desde", request),
            hasta=to_datetime("hasta", request),
            incluir_pasados=request.incluir_pasados,
        )
        return eventos_pb2.ListEventosResponse(
            eventos=[to_proto(e) for e in page.eventos], next_page_token=page.next_page_token
        )

    async def UpdateEvento(
        self, request: eventos_pb2.UpdateEventoRequest, context: grpc.aio.ServicerContext
    ) -> eventos_pb2.Evento:
        evento = await self.service.update(
            request.evento.id, to_draft(request.evento), list(request.update_mask.paths)
        )
        return self.answer(evento)

    async def DeleteEvento(
        self, request: eventos_pb2.DeleteEventoRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self.service.delete(request.id)
        return empty_pb2.Empty()

    async def ReservarEntradas(
        self, request: eventos_pb2.ReservarEntradasRequest, context: grpc.aio.ServicerContext
    ) -> eventos_pb2.ReservarEntradasResponse:
        reserva = ReservaRequest(
            request.evento_id, request.reserva_id, request.cantidad, tuple(request.asientos), request.usuario_id
        )
        return eventos_pb2.ReservarEntradasResponse(**to_change_fields(await self.service.reservar(reserva)))

    async def LiberarEntradas(
        self, request: eventos_pb2.LiberarEntradasRequest, context: grpc.aio.ServicerContext
    ) -> eventos_pb2.LiberarEntradasResponse:
        change = await self.service.liberar(request.evento_id, request.reserva_id)
        return eventos_pb2.LiberarEntradasResponse(**to_change_fields(change))
