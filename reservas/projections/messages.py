"""Protobuf in and out for the read side's two RPCs (the servicer delegates here)."""

from __future__ import annotations

from eventflow.reservas.v1 import reservas_pb2
from infra.errors import InvalidArgument
from reservas.domain import Estado
from reservas.mapping import PB_TO_ESTADO, reserva_to_pb, timestamp
from reservas.projections.queries import Estadisticas, ReservasPage, ReservasQueries


def estado_filter(value: int) -> Estado | None:
    """ESTADO_RESERVA_UNSPECIFIED means no filter; an unknown number is the caller's mistake."""
    if value == reservas_pb2.ESTADO_RESERVA_UNSPECIFIED:
        return None
    if value not in PB_TO_ESTADO:
        raise InvalidArgument(f"estado {value} is not a known EstadoReserva", metadata={"field": "estado"})
    return PB_TO_ESTADO[value]  # type: ignore[index]


def page_to_pb(page: ReservasPage) -> reservas_pb2.ListReservasResponse:
    return reservas_pb2.ListReservasResponse(
        reservas=[reserva_to_pb(r) for r in page.reservas],
        next_page_token=page.next_page_token,
        actualizado_hasta=timestamp(page.actualizado_hasta),
    )


def estadisticas_to_pb(stats: Estadisticas) -> reservas_pb2.EstadisticasEvento:
    return reservas_pb2.EstadisticasEvento(
        evento_id=stats.evento_id,
        solicitadas=stats.solicitadas,
        confirmadas=stats.confirmadas,
        fallidas=stats.fallidas,
        canceladas=stats.canceladas,
        entradas_vendidas=stats.entradas_vendidas,
        recaudado=stats.recaudado,
        tasa_conversion=stats.tasa_conversion,
        actualizado_hasta=timestamp(stats.actualizado_hasta),
    )


async def list_reservas(
    queries: ReservasQueries, request: reservas_pb2.ListReservasRequest
) -> reservas_pb2.ListReservasResponse:
    page = await queries.list_reservas(
        usuario_id=request.usuario_id,
        evento_id=request.evento_id,
        estado=estado_filter(request.estado),
        page_size=request.page_size,
        page_token=request.page_token,
    )
    return page_to_pb(page)


async def get_estadisticas_evento(
    queries: ReservasQueries, request: reservas_pb2.GetEstadisticasEventoRequest
) -> reservas_pb2.EstadisticasEvento:
    return estadisticas_to_pb(await queries.estadisticas_evento(request.evento_id))
