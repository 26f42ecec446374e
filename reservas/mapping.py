"""Domain <-> protobuf for reservas: the one place that knows both shapes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from eventflow.reservas.v1 import reservas_pb2
from reservas.domain import Estado, Event, Reserva, TipoPago

ESTADO_TO_PB = {
    Estado.PENDIENTE: reservas_pb2.ESTADO_RESERVA_PENDIENTE,
    Estado.CONFIRMADA: reservas_pb2.ESTADO_RESERVA_CONFIRMADA,
    Estado.FALLIDA: reservas_pb2.ESTADO_RESERVA_FALLIDA,
    Estado.CANCELADA: reservas_pb2.ESTADO_RESERVA_CANCELADA,
}
PB_TO_ESTADO = {v: k for k, v in ESTADO_TO_PB.items()}
TIPO_PAGO_TO_PB = {TipoPago.CARGO: reservas_pb2.TIPO_PAGO_CARGO, TipoPago.REEMBOLSO: reservas_pb2.TIPO_PAGO_REEMBOLSO}


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    return ts


def from_timestamp(ts: timestamp_pb2.Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def reserva_to_pb(reserva: Reserva) -> reservas_pb2.Reserva:
    return reservas_pb2.Reserva(
        id=reserva.id,
        usuario_id=reserva.usuario_id,
        evento_id=reserva.evento_id,
        cantidad=reserva.cantidad,
        asientos=list(reserva.asientos),
        estado=ESTADO_TO_PB[reserva.estado],
        monto=reserva.monto,
        moneda=reserva.moneda,
        motivo=reserva.motivo,
        pagos=[
            reservas_pb2.Pago(id=p.id, tipo=TIPO_PAGO_TO_PB[p.tipo], monto=p.monto, ocurrido=timestamp(p.ocurrido))
            for p in reserva.pagos
        ],
        creada=timestamp(reserva.creada),
        actualizada=timestamp(reserva.actualizada),
        idempotency_key=reserva.idempotency_key,
        version=reserva.version,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def event_to_pb(event: Event) -> reservas_pb2.EventoReserva:
    datos = struct_pb2.Struct()
    json_format.ParseDict(_jsonable(dict(event.datos)), datos)
    return reservas_pb2.EventoReserva(
        tipo=str(event.tipo), version=event.version, ocurrido=timestamp(event.ocurrido), datos=datos
    )
