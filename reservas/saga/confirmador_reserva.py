"""Step 4, ConfirmadorReserva: record the purchase in usuarios, confirm, release the holds.

`RegistrarCompra` (idempotent per reserva_id) -> `CompraRegistrada`; then
`ReservaConfirmada`, the commit point, flushed to the log with everything queued since the
first side effect: from there the saga only goes forward. Releasing
the Redis holds afterwards is best-effort (the seats are taken in eventos; a hold left
behind expires by itself). Each part is skipped when the log says it is done, so recovery
can resume the step. Compensation: `AnularCompra` (idempotent).
"""

from __future__ import annotations

import logging

from infra.errors import DomainError, NotFound
from reservas.domain import Estado, Tipo
from reservas.saga.base import Paso, SagaContext, SagaTakenOver
from reservas.saga.validador_inventario import hold_keys

log = logging.getLogger(__name__)


async def release_holds(ctx: SagaContext) -> None:
    """Best effort: a failure only leaves holds to expire with their TTL."""
    try:
        await ctx.deps.holds.release(hold_keys(ctx.deps.holds, ctx.reserva), ctx.reserva.id)
    except DomainError:
        log.warning("could not release the holds; they will expire", exc_info=True)


async def undo_if_undone_elsewhere(ctx: SagaContext) -> None:
    """Our commit point lost to another process: our lease lapsed and it took the saga over. If it is
    undoing the purchase (or has), the purchase we just recorded in usuarios, after its AnularCompra
    perhaps, must go too; if it completed the purchase, nothing changes. (A late charge cannot happen:
    an undone payment leaves a void that refuses it.)"""
    current = await ctx.deps.store.get(ctx.reserva.id)
    if current is not None and (current.estado is Estado.FALLIDA or current.compensando):
        log.warning("the saga was undone by another process while this one confirmed it: annulling the purchase")
        try:
            await ctx.deps.usuarios.anular_compra(ctx.reserva.usuario_id, ctx.reserva.id)
        except NotFound:
            pass


class ConfirmadorReserva(Paso):
    name = "ConfirmadorReserva"
    completed_by = Tipo.COMPRA_REGISTRADA
    undone_by = Tipo.COMPRA_ANULADA

    async def act(self, ctx: SagaContext) -> None:
        reserva = ctx.reserva
        if not self.completed(reserva):
            await ctx.deps.usuarios.registrar_compra(reserva.usuario_id, reserva.id)
        try:  # from the purchase in usuarios on, losing the saga (at the flush, or noticed by the renewer first,
            # which makes `record` raise) may leave that purchase behind another process's AnularCompra
            if not self.completed(reserva):
                await ctx.record(Tipo.COMPRA_REGISTRADA)
            if reserva.estado is not Estado.CONFIRMADA:
                await ctx.record(Tipo.RESERVA_CONFIRMADA, monto=reserva.monto, moneda=reserva.moneda)
            await ctx.flush()  # the commit point is durable before the holds go and the buyer is answered
        except SagaTakenOver:
            await undo_if_undone_elsewhere(ctx)
            raise
        await release_holds(ctx)

    async def compensate(self, ctx: SagaContext) -> None:
        try:
            await ctx.deps.usuarios.anular_compra(ctx.reserva.usuario_id, ctx.reserva.id)
        except NotFound:
            pass  # the user is gone, and with it any record of the purchase
        await ctx.record(Tipo.COMPRA_ANULADA)
