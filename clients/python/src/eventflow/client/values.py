"""Small conversions a caller needs around the messages: timestamps and enum names.

>>> timestamp("2027-03-14T21:00:00Z").seconds
1805058000
>>> from eventflow.reservas.v1 import reservas_pb2
>>> name(reservas_pb2.EstadoReserva, reservas_pb2.ESTADO_RESERVA_CONFIRMADA)
'CONFIRMADA'
>>> value(reservas_pb2.EstadoReserva, "confirmada") == reservas_pb2.ESTADO_RESERVA_CONFIRMADA
True
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from google.protobuf.timestamp_pb2 import Timestamp

if TYPE_CHECKING:  # the generic base of the generated enum wrappers in the type stubs (types-protobuf)
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper


def timestamp(when: datetime | str) -> Timestamp:
    """A google.protobuf.Timestamp from an aware datetime, or from RFC 3339 text ("2027-03-14T21:00:00Z").
    A naive datetime is refused: it names no instant."""
    if isinstance(when, str):
        stamp = Timestamp()
        stamp.FromJsonString(when)
        return stamp
    if when.tzinfo is None:
        raise ValueError(f"{when!r} has no time zone: give an aware datetime (for example tzinfo=UTC)")
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def to_datetime(stamp: Timestamp) -> datetime:
    """The aware (UTC) datetime of a Timestamp."""
    return stamp.ToDatetime(tzinfo=UTC)


def _prefix(enum: _EnumTypeWrapper[Any]) -> str:
    """ESTADO_RESERVA_ for EstadoReserva: what every value's name starts with (the proto style guide's rule)."""
    names = [v.name for v in enum.DESCRIPTOR.values]
    unspecified = next((n for n in names if n.endswith("_UNSPECIFIED")), None)
    return unspecified[: -len("UNSPECIFIED")] if unspecified else ""


def name(enum: _EnumTypeWrapper[Any], number: int) -> str:
    """The short name of an enum value: name(reservas_pb2.EstadoReserva, reserva.estado) == "CONFIRMADA"."""
    return enum.Name(number).removeprefix(_prefix(enum))


def value(enum: _EnumTypeWrapper[Any], short: str) -> int:
    """The enum value of a short or full name, any case: value(reservas_pb2.EstadoReserva, "confirmada")."""
    upper = short.upper()
    full = upper if upper.startswith(_prefix(enum)) else _prefix(enum) + upper
    return int(enum.Value(full))


__all__ = ["name", "timestamp", "to_datetime", "value"]
