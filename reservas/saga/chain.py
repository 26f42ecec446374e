"""The one place the purchase saga is assembled: which steps, in which order.

Adding a step is adding its class to `STEPS` (and, if it must be undone on cancellation,
its name to `CANCELLATION_ORDER`); no other step changes. A step names itself and the events of its
outcome and of its undo (`Paso.completed_by`, `undone_by`); the aggregate knows no step, and the
orchestrator and recovery read the steps from the chain. (A new kind of event is still a new `Tipo`
in reservas.domain, among `FORWARD_OUTCOMES` if it records a step's outcome.)
"""

from __future__ import annotations

from collections.abc import Sequence

from reservas.saga.base import Paso
from reservas.saga.confirmador_reserva import ConfirmadorReserva
from reservas.saga.procesador_pago import ProcesadorPago
from reservas.saga.saga import Saga
from reservas.saga.validador_datos import ValidadorDatos
from reservas.saga.validador_inventario import ValidadorInventario

STEPS: tuple[type[Paso], ...] = (ValidadorDatos, ValidadorInventario, ProcesadorPago, ConfirmadorReserva)

#: The reverse saga of a confirmed reservation: refund, give the tickets back, drop it from the history.
CANCELLATION_ORDER: tuple[str, ...] = (ProcesadorPago.name, ValidadorInventario.name, ConfirmadorReserva.name)


def build_chain(steps: Sequence[Paso] | None = None) -> Paso:
    """Link the steps, each to the next; returns the first."""
    handlers = list(steps) if steps is not None else [cls() for cls in STEPS]
    if not handlers:
        raise ValueError("a saga needs at least one step")
    current = handlers[0]
    for handler in handlers[1:]:
        current = current.link(handler)
    return handlers[0]


def build_saga(*, attempts: int = 3, backoff: float = 0.2, max_backoff: float = 2.0) -> Saga:
    return Saga(build_chain(), CANCELLATION_ORDER, attempts=attempts, backoff=backoff, max_backoff=max_backoff)
