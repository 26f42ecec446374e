"""The reservas use cases: buy (the saga), read a reservation or its history, cancel.

Reservar answers when the saga has settled: the CONFIRMADA reservation, or the error its
saga recorded (with the reserva_id in the metadata). The request's own fields are checked
before anything is recorded; then the event's admission gate (reservas.gate, in Redis)
answers SOLD_OUT when too few tickets are left, recording nothing; then the idempotency key
is claimed (one insert that also takes the saga's lease and marks it open); then the saga
starts (`ReservaSolicitada`, version 1, is unique per stream: only one driver can start it).
A repeat never starts a second saga: it answers the settled reservation, or waits for the
one in flight (sharing the task in this process, polling the log across processes) up to
the caller's deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from datetime import UTC, datetime
from functools import partial
from typing import TypeGuard

from pymongo.errors import PyMongoError

from infra import pagination
from infra.errors import DeadlineExceeded, DomainError, FailedPrecondition, NotFound, Unavailable
from infra.limits import ReplyBudget
from infra.pagination import PageTokens
from reservas.domain import (
    MAX_ID,
    Estado,
    Event,
    Reserva,
    Solicitud,
    StoreUnavailable,
    Tipo,
    check_fields,
    check_not_past,
    check_text,
)
from reservas.event_store import EventStore
from reservas.gate import Admission, AdmissionGate, Inventory, Outcome
from reservas.leases import Claim, LeaseStore
from reservas.payments import PaymentGateway
from reservas.saga.base import EventosPort, SagaContext, SagaTakenOver, now
from reservas.saga.driver import Driver, NotDriving
from reservas.saga.saga import Saga, error_class, error_from

log = logging.getLogger(__name__)

#: What the admission gate reads of an event to seed or refresh itself.
INVENTORY_FIELDS = ("entradas_disponibles", "inventario_version", "aforo_total")
POLL_SECONDS = 0.05


class ReservaNotFound(NotFound):
    reason = "RESERVA_NOT_FOUND"


class NotCancellable(FailedPrecondition):
    reason = "NOT_CANCELLABLE"


def check_reserva_id(reserva_id: str, field: str = "id") -> None:
    check_text(field, reserva_id, MAX_ID)


def fingerprint(solicitud: Solicitud) -> str:
    """What makes two requests with one idempotency key the same purchase."""
    what = [solicitud.evento_id, solicitud.cantidad, sorted(solicitud.asientos), solicitud.medio_pago]
    return hashlib.sha256(json.dumps(what, ensure_ascii=False).encode()).hexdigest()


def decided(reserva: Reserva | None) -> TypeGuard[Reserva]:
    """Its outcome is known: settled, or failing (compensating: the answer is its error)."""
    return reserva is not None and (reserva.estado is not Estado.PENDIENTE or reserva.compensando)


def retryable(reserva: Reserva) -> bool:
    """A FALLIDA reservation whose failure was an outage (UNAVAILABLE), not an answer about the purchase."""
    return reserva.estado is Estado.FALLIDA and issubclass(error_class(reserva), Unavailable)


class ReservasService:
    def __init__(
        self,
        *,
        store: EventStore,
        keys: LeaseStore,
        driver: Driver,
        saga: Saga,
        eventos: EventosPort,
        payments: PaymentGateway,
        gate: AdmissionGate,
        tokens: PageTokens,
        historial_budget: ReplyBudget[Event],
        wait_seconds: float,
    ) -> None:
        """`historial_budget`: the bytes a page of GetHistorialReserva may take (see infra.limits); `wait_seconds`:
        the longest Reservar and CancelarReserva wait for the saga (Config.reservar_wait_seconds)."""
        self.store = store
        self.tokens = tokens
        self.historial_budget = historial_budget
        self.gate = gate
        self.keys = keys
        self.driver = driver
        self.saga = saga
        self.eventos = eventos
        self.payments = payments
        self.wait_seconds = wait_seconds

    # ---- Reservar ----------------------------------------------------------------------------

    async def reservar(self, solicitud: Solicitud, timeout: float | None = None) -> Reserva:
        """Buy: the settled reservation, or the error its purchase ended with; every answer is counted."""
        metrics = self.driver.deps.metrics
        try:
            reserva = await self._reservar(solicitud, timeout)
        except DomainError as error:
            metrics.failed(error)
            raise
        except PyMongoError:  # the servicer answers it as MONGODB_UNAVAILABLE
            metrics.failed(StoreUnavailable("reservas' database is unavailable"))
            raise
        metrics.answered(str(reserva.estado))
        return reserva

    async def _reservar(self, solicitud: Solicitud, timeout: float | None) -> Reserva:
        check_fields(solicitud)  # before anything is recorded
        self.payments.check_medio_pago(solicitud.medio_pago)
        deadline = self._deadline(timeout)
        claim, reserva = await self._claim_key(solicitud)
        return await self._outcome(solicitud, claim, reserva, deadline)

    async def _claim_key(self, solicitud: Solicitud) -> tuple[Claim, Reserva | None]:
        """Claim the request's idempotency key for a new reservation, past the admission gate (SOLD_OUT there
        records nothing); returns the claim and, when the key stood for an earlier reservation, that one.

        An earlier reservation that failed only because a dependency was down (and was fully undone) does not
        stand: this repeat is the client's retry, so the key moves to a new attempt (one saga at a time per key).
        """
        huella = fingerprint(solicitud)
        admission = await self._admit(solicitud, str(uuid.uuid4()))
        claim = await self._claim(solicitud, huella, admission, admission.reserva_id)
        if claim.won:
            return claim, None
        self.driver.deps.metrics.idempotent_repeats.inc()  # answered from (or waits for) that purchase
        earlier = await self.store.get(claim.reserva_id)
        if earlier is None or not retryable(earlier):
            return claim, earlier
        admission = await self._admit(solicitud, str(uuid.uuid4()), replacing=earlier.id)
        # A REPEAT names the attempt the gate last admitted for this key, which may be older than the one
        # MongoDB holds (the gate was unavailable meanwhile): the key only moves to a new id.
        target = str(uuid.uuid4()) if admission.outcome is Outcome.REPEAT else admission.reserva_id
        claim = await self._claim(solicitud, huella, admission, target, replacing=earlier.id)
        return claim, (None if claim.won else await self.store.get(claim.reserva_id))

    async def _outcome(self, solicitud: Solicitud, claim: Claim, reserva: Reserva | None, deadline: float) -> Reserva:
        """Drive the claimed reservation, or wait for whoever drives it, until its outcome is decided; answer it."""
        fresh = claim.won  # only the claim's own first start skips taking the lease (the claim took it)
        while True:
            if decided(reserva):
                return self._answer(reserva)
            task = self._driving(solicitud, claim.reserva_id, reserva, fresh)
            fresh = False
            reserva = await self._after(task, claim.reserva_id, deadline)

    def _driving(
        self, solicitud: Solicitud, reserva_id: str, reserva: Reserva | None, fresh: bool
    ) -> asyncio.Task[Reserva] | None:
        """The task driving the reservation in this process: a new one when it has no events yet (a fresh claim,
        or a starter that died after its claim), else the running one, if any (None: another process drives it)."""
        if reserva is None:
            return self.driver.launch(reserva_id, partial(self._comprar, solicitud, fresh), fresh=fresh)
        return self.driver.active.get(reserva_id)

    async def _after(self, task: asyncio.Task[Reserva] | None, reserva_id: str, deadline: float) -> Reserva | None:
        """The reservation after one round of waiting: what `task` left, else what the log holds. An error that
        nothing (or not all) of which was recorded is the answer; a recorded failure is read from the log."""
        remaining = self._time_left(reserva_id, deadline)
        try:
            driven = await self._driven(task, remaining)
        except DomainError as error:  # the task's
            if isinstance(error, StoreUnavailable) or "reserva_id" not in error.metadata:
                raise
            driven = None
        if driven is not None and driven.version > 0:
            return driven
        return await self.store.get(reserva_id)

    async def _admit(self, solicitud: Solicitud, reserva_id: str, replacing: str | None = None) -> Admission:
        """Pass the event's admission gate (Redis): SOLD_OUT is answered there, with no database command."""
        admission = await self.gate.admit_seeding(
            solicitud.evento_id,
            partial(self._inventory, solicitud.evento_id),
            reserva_id=reserva_id,
            usuario_id=solicitud.usuario_id,
            idempotency_key=solicitud.idempotency_key,
            cantidad=solicitud.cantidad,
            replacing=replacing,
        )
        if admission.outcome is Outcome.SOLD_OUT and not admission.markers_complete:
            # The gate was seeded mid-sale (Redis lost its data): it may not know this key bought before.
            holder = await self.keys.holder(solicitud.usuario_id, solicitud.idempotency_key)
            if holder is not None:  # a repeat: answered from the recorded reservation
                return Admission(Outcome.REPEAT, holder)
        if admission.outcome is Outcome.SOLD_OUT:
            left = admission.disponibles or 0
            raise FailedPrecondition(
                f"evento {solicitud.evento_id!r} has {left} tickets left, {solicitud.cantidad} requested; "
                "nothing was recorded or charged",
                reason="SOLD_OUT",
                metadata={"evento_id": solicitud.evento_id, "disponibles": left},
            )
        return admission

    async def _inventory(self, evento_id: str) -> Inventory:
        evento = await self.eventos.get_evento(evento_id, INVENTORY_FIELDS)
        return Inventory(evento.entradas_disponibles, evento.inventario_version, evento.aforo_total)

    async def _claim(
        self, solicitud: Solicitud, huella: str, admission: Admission, reserva_id: str, replacing: str | None = None
    ) -> Claim:
        """Claim the key for `reserva_id` (moving it from the failed attempt `replacing`, on a retry); an
        admission the claim did not use is withdrawn from the gate."""
        usuario_id, key = solicitud.usuario_id, solicitud.idempotency_key
        try:
            if replacing is None:
                claim = await self.keys.claim(usuario_id, key, huella, reserva_id)
            else:
                claim = await self.keys.repoint(usuario_id, key, replacing, huella, reserva_id)
        except BaseException:
            await self._withdraw(solicitud, admission)
            raise
        if claim.reserva_id != admission.reserva_id:  # the key stands for another reservation
            await self._withdraw(solicitud, admission)
        elif admission.outcome is Outcome.UNAVAILABLE:  # ungated: the gate must still learn this key bought
            await self.gate.mark(
                solicitud.evento_id,
                reserva_id=claim.reserva_id,
                usuario_id=solicitud.usuario_id,
                idempotency_key=solicitud.idempotency_key,
            )
        return claim

    async def _withdraw(self, solicitud: Solicitud, admission: Admission) -> None:
        if admission.outcome is Outcome.ADMITTED:
            await self.gate.withdraw(
                solicitud.evento_id,
                reserva_id=admission.reserva_id,
                usuario_id=solicitud.usuario_id,
                idempotency_key=solicitud.idempotency_key,
            )

    async def _comprar(self, solicitud: Solicitud, fresh: bool, ctx: SagaContext) -> None:
        if ctx.reserva.version > 0:
            return  # another driver started it meanwhile; it (or recovery) settles it
        if not fresh:  # a fresh claim is open already
            await self.driver.open(ctx.reserva.id)  # before the first event, so recovery finds it
        await ctx.record(Tipo.RESERVA_SOLICITADA, **solicitud.datos())
        log.info("reservation requested", extra={"usuario_id": solicitud.usuario_id, "evento_id": solicitud.evento_id})
        try:
            await self.saga.run(ctx)
        except StoreUnavailable:
            raise
        except DomainError as error:
            if "reserva_id" not in error.metadata:
                raise  # refused before anything was recorded: this error is the whole answer
            # otherwise the failure is in the log: the answer is read from there

    @staticmethod
    def _answer(reserva: Reserva) -> Reserva:
        if reserva.estado in (Estado.CONFIRMADA, Estado.CANCELADA):
            return reserva
        raise error_from(reserva)  # FALLIDA, or compensating: the purchase failed with that error

    # ---- reads -------------------------------------------------------------------------------

    async def get_reserva(self, reserva_id: str, as_of: datetime | None = None) -> Reserva:
        check_reserva_id(reserva_id)
        reserva = await self.store.get(reserva_id, as_of)
        if reserva is None:
            when = "" if as_of is None else f" at {as_of.isoformat()}"
            raise ReservaNotFound(f"no reservation with id {reserva_id!r}{when}", metadata={"reserva_id": reserva_id})
        return reserva

    async def get_historial(self, reserva_id: str, page_size: int = 0, page_token: str = "") -> tuple[list[Event], str]:
        """A page of a reservation's stream, oldest first, and the token of the next page ("" on the last one).

        A page holds at most `page_size` events (0 means 500) and no more than fit in the reply's bytes.
        """
        check_reserva_id(reserva_id, "reserva_id")
        size = pagination.page_size(page_size, default=pagination.MAX_PAGE_SIZE)
        scope = f"GetHistorialReserva|{reserva_id}"
        position = self.tokens.decode(page_token, scope)
        after = 0 if position is None else position.get("v")
        if type(after) is not int or after < 0:
            raise pagination.invalid_token()
        found = await self.store.load_page(reserva_id, after, size + 1)
        if not found and after == 0:
            raise ReservaNotFound(f"no reservation with id {reserva_id!r}", metadata={"reserva_id": reserva_id})
        events = found[: min(size, self.historial_budget.fitting(found))]
        token = self.tokens.encode({"v": events[-1].version}, scope) if len(found) > len(events) else ""
        return events, token

    # ---- CancelarReserva ---------------------------------------------------------------------

    async def cancelar_reserva(self, reserva_id: str, timeout: float | None = None) -> Reserva:
        reserva = await self.get_reserva(reserva_id)
        deadline = self._deadline(timeout)
        if reserva.estado is Estado.CONFIRMADA and not reserva.cancelando:
            await self._check_not_past(reserva)  # once, before the cancellation starts
        while reserva.estado is not Estado.CANCELADA:
            if reserva.estado is not Estado.CONFIRMADA:
                raise NotCancellable(
                    f"reservation {reserva_id} is {reserva.estado}: only a CONFIRMADA one can be cancelled",
                    metadata={"reserva_id": reserva_id, "estado": str(reserva.estado)},
                )
            remaining = self._time_left(reserva_id, deadline)
            try:
                driven = await self._driven(self.driver.launch(reserva_id, self._cancelar), remaining)
            except DomainError as error:  # a cancellation that must wait for recovery, say: that is the answer
                error.metadata.setdefault("reserva_id", reserva_id)
                raise
            reserva = driven if driven is not None else await self.get_reserva(reserva_id)
        return reserva

    async def _check_not_past(self, reserva: Reserva) -> None:
        evento = await self.eventos.get_evento(reserva.evento_id, ("fecha",))  # never its seat map
        fecha = evento.fecha.ToDatetime(tzinfo=UTC)
        check_not_past(reserva.evento_id, fecha, now(), "its tickets cannot be cancelled", reserva_id=reserva.id)

    async def _cancelar(self, ctx: SagaContext) -> None:
        if ctx.reserva.estado is not Estado.CONFIRMADA:
            return
        if not ctx.reserva.cancelando:
            await self.driver.open(ctx.reserva.id)
        await self.saga.cancel(ctx)

    # ---- waiting -----------------------------------------------------------------------------

    def _deadline(self, timeout: float | None) -> float:
        """When to stop waiting: a little before the caller's deadline, so our answer still reaches it."""
        budget = self.wait_seconds if timeout is None else min(timeout, self.wait_seconds)
        return asyncio.get_running_loop().time() + budget - min(0.5, budget * 0.1)

    @staticmethod
    def _time_left(reserva_id: str, deadline: float) -> float:
        """Seconds until `deadline`; DEADLINE_EXCEEDED (SAGA_IN_PROGRESS, naming the reservation) when none."""
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise DeadlineExceeded(
                f"reservation {reserva_id} is still being processed; read it with GetReserva",
                reason="SAGA_IN_PROGRESS",
                metadata={"reserva_id": reserva_id},
            )
        return remaining

    @staticmethod
    async def _driven(task: asyncio.Task[Reserva] | None, remaining: float) -> Reserva | None:
        """What the driving task left within `remaining` seconds; None when the log is to be read instead: time ran
        out (the next round answers DEADLINE_EXCEEDED), or another process drives it (then after a poll interval).
        A domain error of the task propagates."""
        if task is not None:
            try:
                return await asyncio.wait_for(asyncio.shield(task), remaining)
            except TimeoutError:
                return None
            except (NotDriving, SagaTakenOver):
                pass  # another process drives it
        await asyncio.sleep(min(POLL_SECONDS, remaining))
        return None
