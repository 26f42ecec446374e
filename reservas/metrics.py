"""reservas' own Prometheus series: purchases, the saga's steps and compensations, recovery, the admission gate.

One `ReservasMetrics` per app, on the app's registry (infra.metrics.Metrics); it travels with the saga's
dependencies (`SagaDeps.metrics`), so the service, the steps, the orchestrator and recovery reach it without
new wiring. A `ReservasMetrics()` with no registry counts into nothing (unit tests of the chain).

- `eventflow_reservas_purchases_total{outcome,reason}`: every answer of Reservar. outcome is the answered
  reservation's estado (CONFIRMADA; CANCELADA for a repeat of a purchase cancelled since), FALLIDA for an error
  (a SOLD_OUT from the admission gate included: nothing was recorded, but the buyer was told no), or PENDIENTE
  when the caller's deadline came first (reason SAGA_IN_PROGRESS); reason is the ErrorInfo reason ("" on success).
- `eventflow_reservas_idempotent_repeats_total`: Reservar calls whose idempotency key had already bought (answered
  from, or waiting for, the recorded reservation).
- `eventflow_reservas_saga_step_seconds{step}`: how long each step's action took (failed ones too).
- `eventflow_reservas_compensations_total{step}` / `eventflow_reservas_compensation_retries_total{step}`: undos
  that completed (of failed purchases and of cancellations), and failed undo attempts (each retried, or left to
  recovery after the last).
- `eventflow_reservas_sagas_open`: sagas (and cancellations) this process drives right now, and
  `eventflow_reservas_oldest_saga_seconds`: how long the oldest of them has been running (0 when none is): a
  purchase stuck on a slow dependency shows here long before it times out.
- `eventflow_reservas_recovery_rounds_total` / `eventflow_reservas_recovered_sagas_total`: recovery rounds run,
  and sagas they settled.
- `eventflow_reservas_gate_admissions_total{outcome}`: the admission gate's answers (ADMITTED, SOLD_OUT, REPEAT,
  UNAVAILABLE).
- `eventflow_reservas_tickets_left{evento_id}`: eventos' `entradas_disponibles` as last reported to the gate, for
  the `MAX_EVENTS` events the gate heard of most recently (bounded cardinality: an event that stops selling
  drops out when newer ones come).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from infra.errors import DomainError
from infra.metrics import LATENCY_BUCKETS

#: The reason of Reservar's answer when the caller's deadline came first (ReservasService._wait).
SAGA_IN_PROGRESS = "SAGA_IN_PROGRESS"

#: How many events `eventflow_reservas_tickets_left` reports at most.
MAX_EVENTS = 100


class TicketsLeft(Collector):
    """The last inventory eventos reported per event (newest version wins), for the most recent MAX_EVENTS
    events. Written on the event loop, read by the /metrics thread: a lock guards the map."""

    def __init__(self, limit: int = MAX_EVENTS) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._events: OrderedDict[str, tuple[int, int]] = OrderedDict()  # evento_id -> (version, disponibles)

    def note(self, evento_id: str, disponibles: int, version: int) -> None:
        with self._lock:
            known = self._events.get(evento_id)
            if known is not None and known[0] > version:  # a late report of an older inventory
                self._events.move_to_end(evento_id)
                return
            self._events[evento_id] = (version, disponibles)
            self._events.move_to_end(evento_id)
            while len(self._events) > self.limit:
                self._events.popitem(last=False)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "eventflow_reservas_tickets_left",
            f"Tickets left per event, as eventos last reported them (the {self.limit} events seen most recently).",
            labels=["evento_id"],
        )
        with self._lock:
            events = list(self._events.items())
        for evento_id, (_, disponibles) in events:
            family.add_metric([evento_id], disponibles)
        yield family


class ReservasMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.purchases = Counter(
            "eventflow_reservas_purchases_total", "Answers of Reservar, by outcome and reason.",
            ["outcome", "reason"], registry=registry,
        )  # fmt: skip
        self.idempotent_repeats = Counter(
            "eventflow_reservas_idempotent_repeats_total",
            "Reservar calls answered for an idempotency key that had bought already.", registry=registry,
        )  # fmt: skip
        self.step_seconds = Histogram(
            "eventflow_reservas_saga_step_seconds", "Time each saga step's action took, in seconds.", ["step"],
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.compensations = Counter(
            "eventflow_reservas_compensations_total", "Compensating actions completed, by step.", ["step"],
            registry=registry,
        )  # fmt: skip
        self.compensation_retries = Counter(
            "eventflow_reservas_compensation_retries_total", "Compensating actions that failed an attempt, by step.",
            ["step"], registry=registry,
        )  # fmt: skip
        self.sagas_open = Gauge(
            "eventflow_reservas_sagas_open", "Sagas and cancellations this process is driving now.", registry=registry
        )
        self.oldest_saga_seconds = Gauge(
            "eventflow_reservas_oldest_saga_seconds",
            "Seconds the oldest saga this process drives has been running (0: none open).", registry=registry,
        )  # fmt: skip
        self.recovery_rounds = Counter(
            "eventflow_reservas_recovery_rounds_total", "Recovery rounds run.", registry=registry
        )
        self.recovered_sagas = Counter(
            "eventflow_reservas_recovered_sagas_total", "Sagas settled by recovery.", registry=registry
        )
        self.gate_admissions = Counter(
            "eventflow_reservas_gate_admissions_total", "Answers of the admission gate, by outcome.", ["outcome"],
            registry=registry,
        )  # fmt: skip
        self.tickets_left = TicketsLeft()
        if registry is not None:
            registry.register(self.tickets_left)

    def track_open_sagas(self, active: Callable[[], int], oldest: Callable[[], float]) -> None:
        """`eventflow_reservas_sagas_open` reads `active()` and `eventflow_reservas_oldest_saga_seconds` reads
        `oldest()` at each scrape (the driver's active sagas, and the age of the oldest)."""
        self.sagas_open.set_function(active)
        self.oldest_saga_seconds.set_function(oldest)

    def step_took(self, step: str, began: float) -> None:
        """A step's action ended; `began` is its time.perf_counter() at the start."""
        self.step_seconds.labels(step).observe(time.perf_counter() - began)

    def answered(self, estado: str) -> None:
        self.purchases.labels(estado, "").inc()

    def failed(self, error: DomainError) -> None:
        # The caller's deadline came before the saga settled: the purchase is not failed, it is still going.
        outcome = "PENDIENTE" if error.reason == SAGA_IN_PROGRESS else "FALLIDA"
        self.purchases.labels(outcome, error.reason).inc()


__all__ = ["MAX_EVENTS", "ReservasMetrics", "TicketsLeft"]
