"""Step 1, ValidadorDatos: the buyer exists, the event exists and has not happened, seats iff it has a seat map.

The request's own fields are checked first, by `check_fields`, BEFORE anything is recorded
(a malformed request creates no reservation). The step itself then asks usuarios and
eventos, so its outcome is recorded: `DatosValidados` with the amount to charge
(precio x cantidad) and the event's date. It has no side effect, so nothing to compensate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from typing import Any

from infra.errors import InvalidArgument
from infra.limits import check_length
from infra.seats import check_seats, check_seats_fit
from reservas.domain import (
    MAX_CANTIDAD,
    MAX_ID,
    MAX_IDEMPOTENCY_KEY,
    MAX_MEDIO_PAGO,
    Tipo,
    check_not_past,
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


def check_fields(solicitud: Solicitud) -> None:
    """The request's own rules; InvalidArgument naming the field. Pure: nothing is asked or recorded."""
    check_text("usuario_id", solicitud.usuario_id, MAX_ID)
    check_text("evento_id", solicitud.evento_id, MAX_ID)
    check_length("medio_pago", solicitud.medio_pago, MAX_MEDIO_PAGO)
    check_text("idempotency_key", solicitud.idempotency_key, MAX_IDEMPOTENCY_KEY)
    if not 1 <= solicitud.cantidad <= MAX_CANTIDAD:
        raise InvalidArgument(
            f"cantidad must be from 1 to {MAX_CANTIDAD}, got {solicitud.cantidad}", metadata={"field": "cantidad"}
        )
    check_seats(solicitud.asientos, solicitud.cantidad)
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
        check_not_past(evento.id, fecha, now(), "tickets are no longer on sale")
        check_seats_fit(evento.id, evento.con_asientos, reserva.asientos, reserva.cantidad)
        await ctx.record(
            Tipo.DATOS_VALIDADOS,
            monto=importe(evento.precio, reserva.cantidad),
            moneda=evento.moneda or DEFAULT_MONEDA,
            precio=evento.precio,
            fecha_evento=fecha,
            con_asientos=evento.con_asientos,
        )
