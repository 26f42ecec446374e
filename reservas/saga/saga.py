"""The orchestrator: drives the chain forward, and undoes it from the log when a step fails.

`run` hands the context to the first step (or, for recovery, to a later one); the chain
stops at the first failure. `compensate` then records `CompensacionIniciada` and undoes the
started steps newest first (`Saga.to_undo`: completed ones, and started ones
whose outcome was never recorded, since their side effect may have happened). Each undo is
retried with backoff; every failed attempt is recorded as `CompensacionReintentada`. An undo
that still fails is left for recovery while the others go on, so as little as possible stays
half-done; the saga then stays PENDIENTE (compensating) and the original error is still the
answer. When every undo is done, `ReservaFallida` carries the original error (class, reason,
message, metadata) so a repeat of the request can answer the same error.

`cancel` is the reverse saga of a CONFIRMADA reservation: the steps' compensations in
`cancellation_order` (refund, LiberarEntradas, AnularCompra), then `ReservaCancelada`.

All of it works from the log, so recovery calls the same methods after a crash.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from infra import tracing
from infra.backoff import jittered
from infra.errors import (
    AlreadyExists,
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from reservas.domain import Estado, Reserva, StoreUnavailable, Tipo
from reservas.saga.base import Paso, SagaContext, SagaTakenOver

log = logging.getLogger(__name__)

#: What the request itself is refused for; answered without recording anything when nothing was recorded yet.
REFUSALS = (InvalidArgument, NotFound, FailedPrecondition)


#: The reason of a purchase recovery found interrupted (reservas.recovery.interrupted).
SAGA_INTERRUPTED = "SAGA_INTERRUPTED"


class SagaInternalError(DomainError):
    """A step failed in a way no rule foresees (a bug): undone like any failure, answered as INTERNAL."""

    reason = "INTERNAL"


# The error classes a failure is recorded as (by name) and rebuilt from.
_ERRORS: dict[str, type[DomainError]] = {
    cls.__name__: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Unavailable,
        DeadlineExceeded,
        SagaInternalError,
    )
}


def failure_datos(error: DomainError) -> dict[str, object]:
    """What a failure records: enough to raise the same error again later."""
    codigo = next((c.__name__ for c in type(error).__mro__ if _ERRORS.get(c.__name__) is c), "FailedPrecondition")
    return {"motivo": error.message, "razon": error.reason, "codigo": codigo, "detalle": dict(error.metadata)}


def error_class(reserva: Reserva) -> type[DomainError]:
    """The class of the error a failed (or failing) reservation recorded."""
    return _ERRORS.get(reserva.codigo, FailedPrecondition)


def error_from(reserva: Reserva) -> DomainError:
    """The error a failed (or failing) reservation answers: the one its saga recorded."""
    cls = error_class(reserva)
    message = reserva.motivo or f"reservation {reserva.id} failed"
    if issubclass(cls, Unavailable):  # a retry with the same key tries again (ReservasService.reservar)
        if reserva.razon == SAGA_INTERRUPTED:  # its message says what became of the money
            message += "; retry with the same idempotency_key"
        else:  # an outage: the purchase was fully undone
            message += "; nothing was charged or taken: retry with the same idempotency_key"
    return cls(
        message,
        reason=reserva.razon or None,
        metadata={**reserva.detalle, "reserva_id": reserva.id},
    )


class Saga:
    def __init__(
        self,
        chain: Paso,
        cancellation_order: Sequence[str] = (),
        *,
        attempts: int = 3,
        backoff: float = 0.2,
        max_backoff: float = 2.0,
    ) -> None:
        self.chain = chain
        self.cancellation_order = tuple(cancellation_order)
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff

    # ---- forward ---------------------------------------------------------------------------

    async def run_after(self, ctx: SagaContext, name: str) -> None:
        """Drive the chain on from the step after `name` (as run does); when `name` is the last, only flush."""
        following = self.chain.find(name).next
        if following is None:
            await ctx.flush()
            return
        await self.run(ctx, start=following.name)

    async def run(self, ctx: SagaContext, start: str | None = None) -> None:
        """Drive the chain (from `start`). On failure, compensate and raise the original error."""
        first = self.chain if start is None else self.chain.find(start)
        try:
            await first.handle(ctx)
            await ctx.flush()  # whatever the last step left queued
            return
        except (SagaTakenOver, StoreUnavailable):
            raise  # nothing more can be recorded by us: recovery settles it
        except DomainError as error:  # a step's own failure, the ledger's outage (LedgerUnavailable) among them
            failure = error
        except Exception as error:  # noqa: BLE001 - still undo what was done, then answer INTERNAL
            log.exception("a saga step failed unexpectedly")
            failure = SagaInternalError(f"internal error in the purchase ({type(error).__name__}); it was undone")
        if ctx.reserva.version == len(ctx.reserva.pending) and isinstance(failure, REFUSALS):
            # The request itself was refused (a bad field, an unknown user or event, a past event) before the
            # first write of the log, so before any side effect (the log is durable before the first one):
            # nothing was done and nothing is recorded. The answer names no reservation. (An outage there is
            # still recorded, FALLIDA: a retry with the key then buys afresh.)
            ctx.reserva.pending.clear()
            log.info("refused before anything was recorded", extra={"razon": failure.reason})
            await ctx.deps.gate.forget(ctx.reserva.evento_id, ctx.reserva.id)
            raise failure
        failure.metadata.setdefault("reserva_id", ctx.reserva.id)
        if ctx.reserva.estado is Estado.CONFIRMADA:  # past the commit point: only forward
            log.warning("failure after the commit point ignored", extra={"error": failure.message})
            return
        log.info("saga failed; compensating", extra={"razon": failure.reason, "motivo": failure.message})
        await self.compensate(ctx, failure)
        raise failure

    # ---- backward --------------------------------------------------------------------------

    async def compensate(self, ctx: SagaContext, failure: DomainError, pasos: Sequence[str] | None = None) -> bool:
        """Undo the started steps (or `pasos`) newest first; True when the reservation is FALLIDA.

        What was undone, retried or left is flushed to the log before this returns.
        """
        reserva = ctx.reserva
        if reserva.estado is not Estado.PENDIENTE:
            return reserva.estado is Estado.FALLIDA
        if not reserva.compensando:
            to_undo = list(pasos) if pasos is not None else self.to_undo(reserva)
            await ctx.record(Tipo.COMPENSACION_INICIADA, **failure_datos(failure), pasos=to_undo)
            # Durable before any undo, as a cancellation is: two owners of one saga (a replica whose lease lapsed
            # unnoticed, and the recovery that took the saga over) settle it by whose write reaches the log first.
            # Undoing first, the taker could give the tickets back and refund a purchase that the other owner's
            # confirmation then recorded as CONFIRMADA (an oversell and a lost purchase); now the loser of that
            # race learns it (SagaTakenOver) before it has undone anything.
            await ctx.flush()
        left = await self._undo_all(ctx, self.to_undo(reserva))
        if left:
            log.warning("compensation incomplete; recovery will finish it", extra={"pasos": left})
        else:
            await ctx.record(
                Tipo.RESERVA_FALLIDA,
                motivo=reserva.motivo,
                razon=reserva.razon,
                codigo=reserva.codigo,
                detalle=dict(reserva.detalle),
            )
        await ctx.flush()
        if not left:  # its admission, if eventos never reported on it, no longer counts as pending
            await ctx.deps.gate.forget(reserva.evento_id, reserva.id)
        return not left

    def to_undo(self, reserva: Reserva) -> list[str]:
        """Started (possibly completed) steps not yet undone, newest first: those a compensation named when it
        began, or else every started step with something to undo.

        A step that was started but whose completion was not recorded may still have had its effect (the process
        died mid-call), so it is undone too: every undo is idempotent and a no-op where nothing happened.
        """
        undone = {step.name for step in self.chain if step.undone(reserva)}
        if reserva.compensando and reserva.pasos_a_deshacer is not None:  # what it set out to undo, not yet undone
            return [name for name in reserva.pasos_a_deshacer if name not in undone]
        started = [step for step in self.chain if step.started(reserva)]  # chain order: the order they ran in
        return [step.name for step in reversed(started) if step.has_undo() and step.name not in undone]

    def possibly_started(self, reserva: Reserva) -> list[str]:
        """The steps an interrupted saga may have acted on, newest first, for recovery to undo.

        The log is written in batches, so a step may have acted without its events reaching it:
        every step from the first one the log shows started through the end of the chain, except
        those already undone and those with nothing to undo.
        """
        steps = list(self.chain)
        started = [i for i, step in enumerate(steps) if step.started(reserva)]
        if not started:
            return []
        return [step.name for step in reversed(steps[started[0] :]) if step.has_undo() and not step.undone(reserva)]

    async def cancel(self, ctx: SagaContext, motivo: str = "cancelada por el usuario") -> None:
        """Run the reverse saga of a CONFIRMADA reservation; Unavailable if an undo must wait for recovery."""
        reserva = ctx.reserva
        if reserva.estado is Estado.CANCELADA:
            return
        if not reserva.cancelando:
            await ctx.record(Tipo.CANCELACION_SOLICITADA, motivo=motivo)
            await ctx.flush()  # before any undo: a crash must leave a cancellation for recovery to finish
        pending = [name for name in self.cancellation_order if not self.chain.find(name).undone(reserva)]
        left = await self._undo_all(ctx, pending)
        if left:
            await ctx.flush()
            raise Unavailable(
                f"the cancellation could not finish ({', '.join(left)} pending: a service it needs is down); "
                "it will be completed automatically",
                reason="CANCELLATION_PENDING",
                metadata={"reserva_id": reserva.id, "pasos": ",".join(left)},
            )
        await ctx.record(Tipo.RESERVA_CANCELADA, motivo=reserva.motivo)
        await ctx.flush()

    async def _undo_all(self, ctx: SagaContext, names: Sequence[str]) -> list[str]:
        """Undo each named step in order; returns those that still failed after the retries."""
        left = []
        for name in list(names):
            try:
                await self._undo(ctx, self.chain.find(name))
            except (SagaTakenOver, StoreUnavailable, asyncio.CancelledError):
                raise
            except Exception:  # noqa: BLE001 - recorded by _undo; the other undos still run
                left.append(name)
        return left

    async def _undo(self, ctx: SagaContext, step: Paso) -> None:
        intento = 0
        while True:
            intento += 1
            try:
                attributes = {"eventflow.saga.step": step.name, "eventflow.reserva_id": ctx.reserva.id}
                with tracing.span(f"compensate {step.name}", **attributes, **{"eventflow.attempt": intento}):
                    await step.compensate(ctx)
                ctx.deps.metrics.compensations.labels(step.name).inc()
                return
            except (SagaTakenOver, StoreUnavailable):
                raise
            except Exception as error:
                log.warning("compensation failed", extra={"paso": step.name, "intento": intento}, exc_info=True)
                ctx.deps.metrics.compensation_retries.labels(step.name).inc()
                await ctx.record(
                    Tipo.COMPENSACION_REINTENTADA,
                    paso=step.name,
                    error=str(error) or type(error).__name__,
                    razon=getattr(error, "reason", type(error).__name__),
                    intento=intento,
                )
                if intento >= self.attempts:
                    raise
                await asyncio.sleep(self._delay(intento))

    def _delay(self, attempt: int) -> float:
        return jittered(attempt, self.backoff, self.max_backoff)
