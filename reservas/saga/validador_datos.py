"""Step 1, ValidadorDatos: the buyer exists, the event exists and has not happened, seats iff it has a seat map.

The request's own fields are checked first, by `check_fields`, BEFORE anything is recorded
(a malformed request creates no reservation). The step itself then asks usuarios and
eventos, so its outcome is recorded: `DatosValidados` with the amount to charge
(precio x cantidad) and the event's date. It has no side effect, so nothing to compensate.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from infra.errors import FailedPrecondition, InvalidArgument
from infra.limits import check_length
from reservas.domain import (
    MAX_CANTIDAD,
    MAX_ID,
    MAX_IDEMPOTENCY_KEY,
    MAX_MEDIO_PAGO,
    MAX_SEAT_LABEL,
    Tipo,
    check_text,
    importe,
)
from reservas.payments import validate_token
from reservas.saga.base import Paso, SagaContext, now

DEFAULT_MONEDA = "UYU"
#: What the step reads of the event.
SALE_FIELDS = ("id", "fecha", "precio", "moneda", "con_asientos")


@dataclass(frozen=True)
class Solicitud:
    """What a buyer asked for (ReservarRequest), before any check."""

    usuario_id: str
    evento_id: str
    cantidad: int
    asientos: tuple[str, ...]
    medio_pago: str
    idempotency_key: str

    def datos(self) -> dict[str, Any]:
        """The data of ReservaSolicitada."""
        return {
            "usuario_id": self.usuario_id,
            "evento_id": self.evento_id,
            "cantidad": self.cantidad,
            "asientos": list(self.asientos),
            "medio_pago": self.medio_pago,
            "idempotency_key": self.idempotency_key,
        }


def _invalid(field: str, rule: str) -> InvalidArgument:
    return InvalidArgument(f"{field} {rule}", metadata={"field": field})


def check_fields(solicitud: Solicitud) -> None:
    """The request's own rules; InvalidArgument naming the field. Pure: nothing is asked or recorded."""
    check_text("usuario_id", solicitud.usuario_id, MAX_ID)
    check_text("evento_id", solicitud.evento_id, MAX_ID)
    check_length("medio_pago", solicitud.medio_pago, MAX_MEDIO_PAGO)
    check_text("idempotency_key", solicitud.idempotency_key, MAX_IDEMPOTENCY_KEY)
    if not 1 <= solicitud.cantidad <= MAX_CANTIDAD:
        raise _invalid("cantidad", f"must be from 1 to {MAX_CANTIDAD}, got {solicitud.cantidad}")
    if solicitud.asientos:
        if len(solicitud.asientos) != solicitud.cantidad:
            raise _invalid(
                "asientos",
                f"must name exactly cantidad ({solicitud.cantidad}) seats, got {len(solicitud.asientos)}",
            )
        for seat in solicitud.asientos:
            if not seat.strip():
                raise _invalid("asientos", "must not name an empty seat label")
            check_length("asientos", seat, MAX_SEAT_LABEL)
        repeated = sorted(seat for seat, n in Counter(solicitud.asientos).items() if n > 1)
        if repeated:
            raise _invalid("asientos", f"must be distinct; repeated: {', '.join(repeated)}")
    validate_token(solicitud.medio_pago)


class ValidadorDatos(Paso):
    name = "ValidadorDatos"

    check_fields = staticmethod(check_fields)

    async def act(self, ctx: SagaContext) -> None:
        reserva = ctx.reserva
        await ctx.deps.usuarios.get_usuario(reserva.usuario_id)  # NotFound(USUARIO_NOT_FOUND) if unknown
        # NotFound(EVENTO_NOT_FOUND); without the seat lists (a seat map of 50,000 seats is ~1 MB): a seat
        # not in the map is refused by eventos when the tickets are taken (UNKNOWN_SEAT).
        evento = await ctx.deps.eventos.get_evento(reserva.evento_id, SALE_FIELDS)
        fecha = evento.fecha.ToDatetime(tzinfo=UTC)
        if fecha <= now():
            raise FailedPrecondition(
                f"evento {evento.id!r} took place on {fecha.isoformat()}; tickets are no longer on sale",
                reason="EVENT_PAST",
                metadata={"evento_id": evento.id, "fecha": fecha.isoformat()},
            )
        if evento.con_asientos and not reserva.asientos:
            raise InvalidArgument(
                f"evento {evento.id!r} has numbered seats: name {reserva.cantidad} of them in asientos",
                reason="SEATS_REQUIRED",
                metadata={"field": "asientos", "evento_id": evento.id},
            )
        if not evento.con_asientos and reserva.asientos:
            raise InvalidArgument(
                f"evento {evento.id!r} has no numbered seats: leave asientos empty",
                reason="SEATS_NOT_ALLOWED",
                metadata={"field": "asientos", "evento_id": evento.id},
            )
        await ctx.record(
            Tipo.DATOS_VALIDADOS,
            monto=importe(evento.precio, reserva.cantidad),
            moneda=evento.moneda or DEFAULT_MONEDA,
            precio=evento.precio,
            fecha_evento=fecha,
            con_asientos=evento.con_asientos,
        )
