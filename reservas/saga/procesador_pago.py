"""Step 3, ProcesadorPago: charge precio x cantidad through the payment gateway.

The gateway is idempotent per reserva_id (one charge, one refund per reservation). A
declined card records `PagoRechazado` and fails with PAYMENT_DECLINED. A gateway that does
not answer (`tok_timeout`) leaves the outcome unknown: it is settled from the ledger (a
charge found there is recorded as `PagoProcesado`, so the compensation refunds it) and the
purchase fails with PAYMENT_TIMEOUT. Compensation: refund (a no-op if nothing was charged), after recording the
charge it refunds if the log lacks it.
"""

from __future__ import annotations

from typing import NamedTuple

from infra.errors import FailedPrecondition
from reservas.domain import Tipo, TipoPago
from reservas.payments import LedgerEntry, PaymentDeclined, PaymentTimeout
from reservas.saga.base import Paso, SagaContext


class Ledger(NamedTuple):
    """What the payment gateway's ledger holds for one reservation."""

    #: The charge that stands (None: nothing was charged, or the charge was voided).
    charge: LedgerEntry | None
    refunded: bool


async def reconcile_with_ledger(ctx: SagaContext) -> Ledger:
    """Record in the log the charge the ledger holds and the log lacks (`PagoProcesado`, origen "ledger"), so a
    refund recorded next nets against it; returns what the ledger holds.

    How an unknown outcome is settled: a gateway that did not answer, or a process that died before the
    payment's event reached the log.
    """
    entries = await ctx.deps.payments.entries(ctx.reserva.id)
    charge = next((e for e in entries if e.tipo is TipoPago.CARGO and not e.anulado), None)
    if charge is not None and not ProcesadorPago.completed(ctx.reserva):
        await record_charge(ctx, charge, origen="ledger")
    return Ledger(charge, any(e.tipo is TipoPago.REEMBOLSO for e in entries))


async def record_charge(ctx: SagaContext, entry: LedgerEntry, **extra: object) -> None:
    await ctx.record(Tipo.PAGO_PROCESADO, pago_id=entry.id, monto=entry.monto, moneda=entry.moneda, **extra)


class ProcesadorPago(Paso):
    name = "ProcesadorPago"
    completed_by = Tipo.PAGO_PROCESADO
    undone_by = Tipo.PAGO_REEMBOLSADO

    async def act(self, ctx: SagaContext) -> None:
        reserva = ctx.reserva
        try:
            entry = await ctx.deps.payments.charge(reserva.id, reserva.monto, reserva.moneda, reserva.medio_pago)
        except PaymentDeclined as error:
            await ctx.record(Tipo.PAGO_RECHAZADO, motivo=error.message, razon=error.reason)
            raise
        except PaymentTimeout as error:
            charged = (await reconcile_with_ledger(ctx)).charge is not None
            if not charged:
                await ctx.record(Tipo.PAGO_RECHAZADO, motivo=error.message, razon=error.reason)
            raise FailedPrecondition(
                "the payment gateway did not answer in time; "
                + ("the charge it made is refunded" if charged else "nothing was charged")
                + "; try again or use another payment method",
                reason="PAYMENT_TIMEOUT",
                metadata={"reserva_id": reserva.id},
            ) from error
        await record_charge(ctx, entry)

    async def compensate(self, ctx: SagaContext) -> None:
        refund = await ctx.deps.payments.refund(ctx.reserva.id)
        if refund is None:
            await ctx.record(Tipo.PAGO_REEMBOLSADO, pago_id=None, monto=0, moneda=ctx.reserva.moneda)
            return
        if not self.completed(ctx.reserva):
            # A charge the log never heard of: made by an owner of this saga that lost it (killed, or its lease
            # lapsed) after whoever undoes it now last read the ledger. The log learns of it before its refund.
            await reconcile_with_ledger(ctx)
        await ctx.record(Tipo.PAGO_REEMBOLSADO, pago_id=refund.id, monto=refund.monto, moneda=refund.moneda)
