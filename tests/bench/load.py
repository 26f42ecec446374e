"""Driving load and summarising it: a bounded pool of concurrent calls, latency percentiles, outcomes."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence, Sized
from dataclasses import dataclass, field
from typing import Any

import grpc

from eventflow.reservas.v1 import reservas_pb2, reservas_pb2_grpc
from infra.errors import error_info

Call = Callable[[], Awaitable[Any]]


#: What a buyer may be told while the system is racing, crashing or restarting: a refusal about the purchase,
#: or "not now" (a retry may succeed). Anything else (INTERNAL, UNKNOWN, INVALID_ARGUMENT...) is a bug.
EXPECTED_REFUSALS = {"SOLD_OUT", "SEAT_TAKEN", "PAYMENT_DECLINED", "PAYMENT_TIMEOUT"}
TRANSIENT_CODES = {"UNAVAILABLE", "DEADLINE_EXCEEDED"}


def outcome(error: grpc.aio.AioRpcError) -> str:
    """A gRPC error as CODE/REASON (e.g. FAILED_PRECONDITION/SOLD_OUT; "-" when it has no ErrorInfo)."""
    info = error_info(error)
    return f"{error.code().name}/{info.reason if info else '-'}"


def expected(what: str) -> bool:
    """Whether an answer (OK, or an `outcome`, with a "cancel " prefix for a cancellation's) is one a buyer may get."""
    code, _, reason = what.removeprefix("cancel ").partition("/")
    return code == "OK" or code in TRANSIENT_CODES or (code == "FAILED_PRECONDITION" and reason in EXPECTED_REFUSALS)


@dataclass
class Timed:
    """One call: how long it took, and its answer or its gRPC error."""

    seconds: float
    ended: float  # when it finished, in seconds since its batch started
    value: Any = None
    error: grpc.aio.AioRpcError | None = None

    @property
    def outcome(self) -> str:
        return "OK" if self.error is None else outcome(self.error)


@dataclass
class Run:
    """A batch of calls: each call's timing, and the wall time of the whole batch."""

    calls: list[Timed] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def ok(self) -> list[Any]:
        return [c.value for c in self.calls if c.error is None]

    def outcomes(self) -> Counter[str]:
        return Counter(c.outcome for c in self.calls)

    @property
    def rate(self) -> float:
        return len(self.calls) / self.elapsed if self.elapsed > 0 else math.inf

    def percentiles(self) -> dict[str, float]:
        return percentiles([c.seconds for c in self.calls])

    def halves(self) -> tuple[float, float]:
        """Answers per second in the first and in the second half of the batch's wall time."""
        middle = self.elapsed / 2
        first = sum(1 for c in self.calls if c.ended <= middle)
        return (first / middle, (len(self.calls) - first) / middle) if middle > 0 else (math.nan, math.nan)


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 (nearest rank) and max, in seconds; empty samples give NaN."""
    ordered = sorted(samples)
    if not ordered:
        return {"p50": math.nan, "p95": math.nan, "p99": math.nan, "max": math.nan}

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    return {"p50": rank(50), "p95": rank(95), "p99": rank(99), "max": ordered[-1]}


async def pool(calls: Iterable[Call], concurrency: int, seconds: float | None = None) -> Run:
    """Run `calls` with at most `concurrency` in flight; gRPC errors are recorded, anything else raises.

    With `seconds`, no call starts once that much time has passed (those in flight finish and count):
    a time budget lets one scenario measure a slow and a fast system alike, where a fixed number of
    calls would take minutes on one and milliseconds on the other. `calls` may then be endless.
    """
    results: list[Timed] = []
    queue = iter(calls)
    workers = min(concurrency, len(calls)) if isinstance(calls, Sized) else concurrency

    async def worker() -> None:
        while seconds is None or time.perf_counter() - started < seconds:
            call = next(queue, None)
            if call is None:
                return
            sent = time.perf_counter()
            try:
                value = await call()
            except grpc.aio.AioRpcError as error:
                now = time.perf_counter()
                results.append(Timed(now - sent, now - started, error=error))
            else:
                now = time.perf_counter()
                results.append(Timed(now - sent, now - started, value))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, workers))))
    return Run(results, time.perf_counter() - started)


async def poll_pending(
    stub: reservas_pb2_grpc.ReservasServiceStub, ids: Iterable[str], until: float, interval: float = 2.0
) -> list[str]:
    """Every `interval` seconds, GetReserva for the reservations still PENDIENTE, until none is or the
    loop's clock passes `until`; returns those still PENDIENTE (or unreadable: reservas restarting).

    Cheap next to reading every stream of the event store, which is what a settling check needs at
    the end: polling with full reads would compete with the recovery it waits for.
    """
    loop = asyncio.get_running_loop()
    pending = list(ids)
    gate = asyncio.Semaphore(10)

    async def still_pending(reserva_id: str) -> bool:
        async with gate:
            try:
                reply = await stub.GetReserva(reservas_pb2.GetReservaRequest(id=reserva_id), timeout=30)
            except grpc.aio.AioRpcError:
                return True
            return bool(reply.estado == reservas_pb2.ESTADO_RESERVA_PENDIENTE)

    while pending:
        await asyncio.sleep(interval)
        flags = await asyncio.gather(*(still_pending(i) for i in pending))
        pending = [i for i, flag in zip(pending, flags, strict=True) if flag]
        if loop.time() > until:
            break
    return pending
