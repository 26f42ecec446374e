"""Sends generated calls to the stack, a few at a time, and counts what comes back.

Calls go out through plain gRPC channels, one per service, with method handles built from the descriptors
(`Rpc.path`, its request and response classes): no generated stub is involved, so every RPC the
descriptors name can be called. `submit` returns once the call is on its way (at most `concurrency` in
flight); `drain` waits for the rest. Each answer is judged by tests/fuzz/oracle.py and counted per RPC,
per status code and per kind of caller; the first examples of each problem are kept for the report.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from infra.errors import error_info
from tests.fuzz.generate import Call, Pool, Rpc
from tests.fuzz.oracle import DETAILS_MISMATCH, Outcome, problem

#: Examples of each problem kept for the report.
EXAMPLES = 3


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def outcome_of(error: grpc.RpcError) -> Outcome:
    try:
        info = error_info(error)
    except ValueError as mismatch:  # the rich status names another code than the call ended with
        return Outcome(error.code(), DETAILS_MISMATCH, f"{mismatch}; {error.details()}")
    return Outcome(error.code(), info.reason if info is not None else "", error.details() or "")


@dataclass
class Tally:
    per_rpc: Counter[tuple[str, str]] = field(default_factory=Counter)  # (rpc, code)
    per_kind: Counter[tuple[str, str]] = field(default_factory=Counter)  # (caller kind, code)
    per_variant: Counter[str] = field(default_factory=Counter)  # "kind:variant"
    broken_claims: Counter[str] = field(default_factory=Counter)
    per_mode: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    calls: int = 0
    started: float = field(default_factory=time.monotonic)
    elapsed: float = 0.0

    def record(self, call: Call, outcome: Outcome, trouble: str | None) -> None:
        code = outcome.code.name
        self.calls += 1
        self.per_rpc[(call.rpc.name, code)] += 1
        self.per_kind[(call.caller.kind.value, code)] += 1
        family, _, parts = call.caller.variant.partition(":")  # "claims:exp-type+kid": one count per broken part
        self.per_variant[f"{call.caller.kind}:{family}"] += 1
        for part in filter(None, parts.split("+")):
            self.broken_claims[part] += 1
        self.per_mode[call.mode] += 1
        if outcome.reason:
            self.reasons[outcome.reason] += 1
        if trouble is not None:
            key = f"{call.rpc.name}: {trouble}"
            self.problems[key] += 1
            if len(self.examples[key]) < EXAMPLES:
                self.examples[key].append(
                    f"caller {call.caller.kind}:{call.caller.variant}, mode {call.mode}, answer {code} "
                    f"{outcome.reason} {_short(outcome.details, 200)!r}\n      request {_short(repr(call.request))}"
                )

    def table(self, rows: list[str], counts: Counter[tuple[str, str]], title: str) -> list[str]:
        codes = sorted({code for _, code in counts}, key=lambda c: (c != "OK", c))
        width = max(len(title), *(len(r) for r in rows))
        lines = [f"  {title:<{width}} {'total':>6} " + " ".join(f"{c:>{max(len(c), 5)}}" for c in codes)]
        for row in rows:
            cells = " ".join(f"{counts[(row, c)] or '':>{max(len(c), 5)}}" for c in codes)
            lines.append(f"  {row:<{width}} {sum(counts[(row, c)] for c in codes):>6} {cells}")
        return lines

    def report(self, rpcs: tuple[Rpc, ...]) -> str:
        lines = [f"fuzz: {self.calls} calls in {self.elapsed:.1f}s ({self.calls / max(self.elapsed, 1e-9):.0f}/s)", ""]
        lines += self.table([r.name for r in rpcs], self.per_rpc, "calls per RPC and status code")
        codes: Counter[str] = Counter()
        for (_, code), n in self.per_rpc.items():
            codes[code] += n
        lines += ["", "  per status code: " + ", ".join(f"{c} {n}" for c, n in codes.most_common())]
        kinds = sorted({k for k, _ in self.per_kind}, key=lambda k: (k != "valid", k))
        lines += [""] + self.table(kinds, self.per_kind, "calls per token kind and status code")
        lines += ["", "  token variants: " + ", ".join(f"{v} {n}" for v, n in sorted(self.per_variant.items()))]
        claims = sorted(self.broken_claims.items())
        lines += ["  broken claims (forged:claims): " + ", ".join(f"{c} {n}" for c, n in claims)]
        lines += ["  request modes: " + ", ".join(f"{m} {n}" for m, n in sorted(self.per_mode.items()))]
        lines += ["  error reasons: " + ", ".join(f"{r} {n}" for r, n in self.reasons.most_common())]
        if self.problems:
            lines += ["", f"PROBLEMS ({sum(self.problems.values())} calls):"]
            for key, n in self.problems.most_common():
                lines.append(f"  {n:>5} × {key}")
                lines += [f"    e.g. {example}" for example in self.examples[key]]
        return "\n".join(lines)


class Runner:
    """Sends calls concurrently (at most `concurrency` in flight) and tallies their answers."""

    def __init__(self, addresses: Mapping[str, str], pool: Pool, rpcs: tuple[Rpc, ...], *,
                 concurrency: int = 8, timeout: float = 60.0) -> None:  # fmt: skip
        self.pool = pool
        self.timeout = timeout
        self.tally = Tally()
        self._channels = {name: grpc.insecure_channel(address) for name, address in addresses.items()}
        self._methods: dict[str, Callable[..., Any]] = {
            rpc.path: self._channels[rpc.service].unary_unary(
                rpc.path,
                request_serializer=rpc.request_class.SerializeToString,
                response_deserializer=rpc.response_class.FromString,
            )
            for rpc in rpcs
        }
        self._slots = threading.BoundedSemaphore(concurrency)
        self._concurrency = concurrency
        self._lock = threading.Lock()
        #: The fuzzer's valid servicio calls to the saga's internal RPCs, whatever their answer: undone at the end.
        self.internal: list[Call] = []
        self.submitted = 0

    def call(self, call: Call) -> Outcome:
        """One call, synchronously (not tallied)."""
        try:
            self._methods[call.rpc.path](call.request, metadata=call.caller.metadata, timeout=self.timeout)
        except grpc.RpcError as error:
            return outcome_of(error)
        return Outcome(grpc.StatusCode.OK)

    def submit(self, call: Call) -> None:
        self.submitted += 1
        if call.servicio_internal:
            self.internal.append(call)
        self._slots.acquire()
        try:
            future = self._methods[call.rpc.path].future(
                call.request, metadata=call.caller.metadata, timeout=self.timeout
            )
        except Exception as error:  # noqa: BLE001 - the generator made a call gRPC cannot send: report it
            self._slots.release()
            self._record(call, Outcome(grpc.StatusCode.UNKNOWN, "CLIENT_ERROR", repr(error)))
            return
        future.add_done_callback(lambda f: self._done(call, f))

    def _done(self, call: Call, future: grpc.Future) -> None:
        try:
            error = future.exception()
            outcome = Outcome(grpc.StatusCode.OK) if error is None else outcome_of(error)
        except Exception as bug:  # noqa: BLE001 - never lose a call: count it, as the fuzzer's own problem
            outcome = Outcome(grpc.StatusCode.UNKNOWN, "FUZZER_ERROR", repr(bug))
        try:
            self._record(call, outcome)
        finally:
            self._slots.release()

    def _record(self, call: Call, outcome: Outcome) -> None:
        trouble = problem(call, outcome, self.pool)
        with self._lock:
            self.tally.record(call, outcome, trouble)

    def drain(self) -> Tally:
        """Wait for every call in flight; the tally, with its elapsed time."""
        for _ in range(self._concurrency):
            self._slots.acquire()
        for _ in range(self._concurrency):
            self._slots.release()
        self.tally.elapsed = time.monotonic() - self.tally.started
        return self.tally

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
