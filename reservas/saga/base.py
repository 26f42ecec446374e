"""The saga's building blocks: a step of the Chain of Responsibility and the context it works on.

A step (`Paso`) has a `name`, an action (`act`) and a compensating action (`compensate`),
and knows the step after it (`next`). `handle` records `PasoIniciado` before the step's
side effects, runs the action (which records its completion event after the side effect),
and hands the context to the next step; a failure propagates up to the orchestrator
(`reservas.saga.saga.Saga`), which compensates from the log. Steps never call each other
directly and never know which step follows: the chain is assembled in `chain.py` only.

Recording is not writing. `SagaContext.record` applies an event to the aggregate and queues
it; `SagaContext.flush` appends everything queued in one ordered write. The saga flushes only
where the log must be durable: before the first side effect (a step whose `durable_before`
is set: from then on recovery knows the purchase started and may have done anything), at the
commit point (`ReservaConfirmada`), before a cancellation's undos, and before the caller is
answered. In between, a crash loses only events that recovery re-derives: a started step's
effect is found from the ledger and eventos, and an interrupted saga is compensated as a whole
(every undo is idempotent and a no-op where nothing happened). A stream cut after any prefix
of a flush is still a valid stream.

Every action and every compensation is idempotent: recovery may run it again after a crash.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

from infra import tracing
from reservas import faults
from reservas.domain import ConcurrencyConflict, Event, Reserva, Tipo
from reservas.metrics import ReservasMetrics
from reservas.payments import PaymentGateway

log = logging.getLogger(__name__)


def now() -> datetime:
    """Now, at MongoDB's precision (milliseconds), so a recorded event equals itself read back."""
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


# ---- the ports the steps talk to (reservas.clients / holds / event_store, or fakes in unit tests)


class UsuariosPort(Protocol):
    async def get_usuario(self, usuario_id: str) -> Any: ...
    async def registrar_compra(self, usuario_id: str, reserva_id: str) -> None: ...
    async def anular_compra(self, usuario_id: str, reserva_id: str) -> None: ...


class EventosPort(Protocol):
    async def get_evento(self, evento_id: str, fields: Sequence[str] = ()) -> Any: ...
    async def reservar_entradas(
        self, evento_id: str, reserva_id: str, cantidad: int, asientos: Sequence[str], usuario_id: str = ""
    ) -> Any: ...
    async def liberar_entradas(self, evento_id: str, reserva_id: str) -> Any: ...


class HoldsPort(Protocol):
    def keys_for(self, evento_id: str, asientos: Sequence[str], reserva_id: str) -> list[str]: ...
    async def acquire(self, keys: Sequence[str], reserva_id: str) -> list[str]: ...
    async def release(self, keys: Sequence[str], reserva_id: str) -> int: ...


class GatePort(Protocol):
    """The admission gate's side of the saga (reservas.gate): what eventos answered, and sagas that end."""

    async def report(self, evento_id: str, *, disponibles: int, version: int, reserva_id: str | None = None) -> None: ...
    async def forget(self, evento_id: str, reserva_id: str) -> None: ...


class NoGate:
    """No admission gate (unit tests of the chain): nothing to tell."""

    async def report(self, evento_id: str, *, disponibles: int, version: int, reserva_id: str | None = None) -> None:
        pass

    async def forget(self, evento_id: str, reserva_id: str) -> None:
        pass


class StorePort(Protocol):
    async def save(self, reserva: Reserva) -> None: ...
    async def get(self, reserva_id: str, as_of: datetime | None = None) -> Reserva | None: ...


@dataclass
class SagaDeps:
    usuarios: UsuariosPort
    eventos: EventosPort
    holds: HoldsPort
    payments: PaymentGateway
    store: StorePort
    gate: GatePort = field(default_factory=NoGate)
    #: The app's series (reservas.metrics); the default counts into nothing.
    metrics: ReservasMetrics = field(default_factory=ReservasMetrics)


# ---- what stops a driver without compensating


class SagaTakenOver(Exception):  # noqa: N818 - a signal, not an error of the domain
    """Another driver recorded first, or our lease was lost: stop driving, touch nothing more."""


@dataclass
class SagaContext:
    """One reservation being driven: its aggregate, the dependencies, and the lease's health."""

    reserva: Reserva
    deps: SagaDeps
    lease_lost: asyncio.Event = field(default_factory=asyncio.Event)

    async def record(self, tipo: Tipo, **datos: Any) -> Event:
        """Apply one event to the aggregate and queue it for the next `flush` (no I/O)."""
        self._check_lease()
        event = self.reserva.record(tipo, datos, now())
        log.info("saga event", extra={"tipo": str(tipo), "version": event.version})
        return event

    async def flush(self) -> None:
        """Append every queued event, in order, in one write: durable before we go on."""
        if not self.reserva.pending:
            return
        self._check_lease()
        try:
            await self.deps.store.save(self.reserva)  # StoreUnavailable when the store does not take them
        except ConcurrencyConflict as error:
            raise SagaTakenOver(str(error)) from error

    def _check_lease(self) -> None:
        if self.lease_lost.is_set():
            raise SagaTakenOver(f"lost the lease on reservation {self.reserva.id}")


class Paso(ABC):
    """One saga step: an action, a compensating action, and the step after it."""

    name: ClassVar[str]
    #: The event that records the step's outcome, and the one that records its undo (None: none is recorded).
    completed_by: ClassVar[Tipo | None] = None
    undone_by: ClassVar[Tipo | None] = None
    #: The log must be durable before this step's side effects (the first step that has any).
    durable_before: ClassVar[bool] = False

    def __init__(self) -> None:
        self.next: Paso | None = None

    def link(self, following: Paso) -> Paso:
        """Make `following` the next step; returns it, so links can be chained."""
        self.next = following
        return following

    async def handle(self, ctx: SagaContext) -> None:
        """Announce the step, do it (in a span of its own: infra.tracing), pass the context on (a failure
        propagates to the orchestrator)."""
        if self.name not in ctx.reserva.pasos_iniciados:
            await ctx.record(Tipo.PASO_INICIADO, paso=self.name)
        if self.durable_before:
            await ctx.flush()
        with tracing.span(self.name, **{"eventflow.saga.step": self.name, "eventflow.reserva_id": ctx.reserva.id}):
            await faults.checkpoint(self.name, "before")  # after the announcement, before any side effect
            began = time.perf_counter()
            try:
                await self.act(ctx)
            finally:
                ctx.deps.metrics.step_took(self.name, began)
            await faults.checkpoint(self.name, "after")
        if self.next is not None:
            await self.next.handle(ctx)

    @abstractmethod
    async def act(self, ctx: SagaContext) -> None:
        """Do the step and record its outcome. Idempotent."""

    async def compensate(self, ctx: SagaContext) -> None:  # noqa: B027 - a step may have nothing to undo
        """Undo the step (a no-op where nothing happened) and record it. Idempotent."""

    @classmethod
    def completed(cls, reserva: Reserva) -> bool:
        """The log records the step's outcome (so it certainly started)."""
        return cls.completed_by is not None and cls.completed_by in reserva.tipos

    @classmethod
    def undone(cls, reserva: Reserva) -> bool:
        return cls.undone_by is not None and cls.undone_by in reserva.tipos

    @classmethod
    def has_undo(cls) -> bool:
        """Whether the step has anything to undo (it overrides `compensate`)."""
        return cls.compensate is not Paso.compensate

    def started(self, reserva: Reserva) -> bool:
        return self.name in reserva.pasos_iniciados or self.completed(reserva)

    def __iter__(self) -> Iterator[Paso]:
        step: Paso | None = self
        while step is not None:
            yield step
            step = step.next

    def find(self, name: str) -> Paso:
        for step in self:
            if step.name == name:
                return step
        raise KeyError(f"no saga step named {name!r}")
