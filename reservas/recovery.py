"""Recovery: settle the sagas nobody is driving any more (the process died, a call was lost).

On startup and then every `interval` seconds, `LeaseStore.unsettled` lists the open sagas
whose lease is free or expired; each is claimed through the `Driver` (its lease: safe with
several reservas processes) and settled from its log:

- requested but never started (a crash between the claim and the first event): nothing to do;
- CONFIRMADA: finish forward (release the holds); FALLIDA / CANCELADA: nothing to do;
- cancelling: finish the reverse saga;
- compensating: finish the compensation;
- otherwise it was interrupted mid-saga. The log is written in batches (`reservas.saga.base`),
  so it may lack the last steps' events: the ledger says whether the buyer was charged. Charged
  (and not refunded): complete forward if eventos still holds the tickets for it
  (ReservarEntradas again is idempotent: success means still taken), else compensate. Not
  charged: compensate every step that may have acted (`Saga.possibly_started`).

A saga that cannot be settled now (a dependency is down) is retried later with a growing
backoff (up to MAX_BACKOFF_SECONDS), so a long outage does not flood its stream with retries. A
round that settles some saga makes the ones waiting on a backoff due again: what they waited for
may be back, and after an outage they settle within a round or two instead of each waiting out
its backoff (their backoff is kept: one that fails again waits longer still).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from infra.errors import DomainError, FailedPrecondition, Unavailable
from reservas.domain import Estado, Tipo
from reservas.leases import LeaseStore
from reservas.saga.base import SagaContext
from reservas.saga.confirmador_reserva import release_holds
from reservas.saga.driver import Driver, NotDriving
from reservas.saga.procesador_pago import ProcesadorPago, reconcile_with_ledger
from reservas.saga.validador_inventario import ValidadorInventario, hold_keys, report_answer
from reservas.saga.saga import SAGA_INTERRUPTED, Saga, error_from

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0


def interrupted(reserva_id: str, charged: bool) -> Unavailable:
    what = "its payment was refunded" if charged else "nothing was charged"
    return Unavailable(
        f"the purchase was interrupted (reservas restarted or lost track of it); {what}",
        reason=SAGA_INTERRUPTED,
        metadata={"reserva_id": reserva_id},
    )


class Recovery:
    def __init__(
        self, driver: Driver, leases: LeaseStore, saga: Saga, *, interval: float, concurrency: int = 8
    ) -> None:
        self.driver = driver
        self.leases = leases
        self.saga = saga
        self.interval = interval
        self.concurrency = concurrency
        self._retry_at: dict[str, tuple[float, float]] = {}  # reserva_id -> (when, backoff)

    async def run_forever(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # noqa: BLE001 - the loop must outlive any single failure
                log.warning("recovery round failed", exc_info=True)
            await asyncio.sleep(self.interval)

    async def run_once(self) -> int:
        """One round; returns how many sagas it settled."""
        loop = asyncio.get_running_loop()
        self.driver.deps.metrics.recovery_rounds.inc()
        ids = await self.leases.unsettled(older_than_seconds=0, limit=100)
        due = [
            i for i in ids if not self.driver.is_active(i) and self._retry_at.get(i, (0.0, 0.0))[0] <= loop.time()
        ]
        gate = asyncio.Semaphore(self.concurrency)

        async def one(reserva_id: str) -> bool:
            async with gate:
                return await self._settle_one(reserva_id)

        settled = sum(await asyncio.gather(*(one(i) for i in due)))
        if settled:  # something came back: the sagas waiting on a backoff are due in the next round
            now = loop.time()
            self._retry_at = {rid: (min(when, now), backoff) for rid, (when, backoff) in self._retry_at.items()}
        return settled

    async def _settle_one(self, reserva_id: str) -> bool:
        try:
            reserva = await self.driver.launch(reserva_id, self.settle)
        except NotDriving:
            return False
        except Exception as error:  # noqa: BLE001 - try again later
            self._backoff(reserva_id)
            log.warning("could not settle a saga yet", extra={"reserva_id": reserva_id, "error": str(error)})
            return False
        if reserva.version > 0 and not reserva.settled:
            self._backoff(reserva_id)
            return False
        self._retry_at.pop(reserva_id, None)
        self.driver.deps.metrics.recovered_sagas.inc()
        log.info("saga settled by recovery", extra={"reserva_id": reserva_id, "estado": str(reserva.estado)})
        return True

    def _backoff(self, reserva_id: str) -> None:
        _, previous = self._retry_at.get(reserva_id, (0.0, self.interval / 2))
        delay = min(MAX_BACKOFF_SECONDS, previous * 2)
        self._retry_at[reserva_id] = (asyncio.get_running_loop().time() + delay, delay)

    async def settle(self, ctx: SagaContext) -> None:
        """Settle one saga from its log (run under its lease by the driver)."""
        reserva = ctx.reserva
        log.info("recovering a saga", extra={"estado": str(reserva.estado), "version": reserva.version})
        if reserva.version == 0:  # claimed, never requested: nothing happened
            await self.leases.mark_settled(reserva.id)
        elif reserva.cancelando:  # a cancellation under way: finish the reverse saga
            await self.saga.cancel(ctx)
        elif reserva.estado is Estado.CONFIRMADA:  # only the holds may be left
            await release_holds(ctx)
        elif reserva.settled:  # FALLIDA or CANCELADA: nothing to do
            pass
        elif reserva.compensando:  # an undo under way: finish it, with the error it recorded
            await self.saga.compensate(ctx, error_from(reserva))
        else:
            await self._finish_interrupted(ctx)

    async def _finish_interrupted(self, ctx: SagaContext) -> None:
        """A saga interrupted mid-way: complete it if the buyer was charged (and not refunded) and eventos still
        holds the tickets for it; otherwise undo every step that may have acted."""
        reserva = ctx.reserva
        charge, refunded = await reconcile_with_ledger(ctx)  # the log may lack the payment: the ledger knows
        held = await self._tickets_held(ctx) if charge is not None and not refunded else None
        if held is None:
            failure = interrupted(reserva.id, charged=charge is not None)
            await self.saga.compensate(ctx, failure, self.saga.possibly_started(reserva))
            return
        await report_answer(ctx.deps.gate, reserva, held)  # the gate stops counting it as pending
        if not ValidadorInventario.completed(reserva):  # the log may lack the take: it happened
            await ctx.record(
                Tipo.ENTRADAS_BLOQUEADAS,
                holds=hold_keys(ctx.deps.holds, reserva),
                cantidad=reserva.cantidad,
                asientos=list(reserva.asientos),
            )
        with contextlib.suppress(DomainError):  # run compensates a failure; the log says how it ended
            await self.saga.run_after(ctx, ProcesadorPago.name)  # on from the step after the payment

    @staticmethod
    async def _tickets_held(ctx: SagaContext) -> Any | None:
        """eventos' answer when it still holds the tickets for this reservation (taking them again is idempotent
        per reserva_id: success means still taken); None when it does not any more (RESERVA_RELEASED, SOLD_OUT,
        SEAT_TAKEN, LIMIT_PER_BUYER_EXCEEDED)."""
        reserva = ctx.reserva
        try:
            return await ctx.deps.eventos.reservar_entradas(
                reserva.evento_id, reserva.id, reserva.cantidad, reserva.asientos, reserva.usuario_id
            )
        except FailedPrecondition:
            return None
