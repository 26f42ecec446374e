"""Step 1, ValidadorDatos: the buyer exists, the event exists and has not happened, seats iff it has a seat map.

The request's own fields are checked first, by `reservas.domain.check_fields`, BEFORE anything is
recorded (a malformed request creates no reservation). The step itself then asks usuarios and
eventos, so its outcome is recorded: `DatosValidados` with the amount to charge
(precio x cantidad) and the event's date. It has no side effect, so nothing to compensate.
"""

from __future__ import annotations

from datetime import UTC

from infra.seats import check_seats_fit
from reservas.domain import Tipo, check_not_past, importe
from reservas.saga.base import Paso, SagaContext, now

DEFAULT_MONEDA = "UYU"
#: What the step reads of the event.
SALE_FIELDS = ("id", "fecha", "precio", "moneda", "con_asientos")


class ValidadorDatos(Paso):
    name = "ValidadorDatos"
    completed_by = Tipo.DATOS_VALIDADOS

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
