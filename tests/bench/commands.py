"""MongoDB commands per purchase, counted on the server: `serverStatus` opcounters before and after.

The server counts what every client sends it, so the figure is summed over the three services, with
no hook in any of them (the same count works on the code of any revision, and on a real mongod).
Counted: insert + query + update + delete + command; getmore is left out (a change stream's or a
cursor's next batch is not a request the code chose to make). A findAndModify counts as an update,
a count or an aggregate as a command, as mongod counts them.

What is counted is everything the server did meanwhile: besides the saga itself, the work it set off
in the background (the read-model projector applying its events, recovery scans) and the
benchmark's own serverStatus readings. The readings are subtracted: how much one adds is measured
on the spot (SecantusDB and mongod both count serverStatus as a command). The background is not:
it is part of what a purchase costs; what the stack does when idle is measured beside it, so the
reader can tell the two apart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from pymongo import AsyncMongoClient
from pymongo.errors import AutoReconnect

COUNTED = ("insert", "query", "update", "delete", "command")


async def opcounters(mongo: AsyncMongoClient) -> dict[str, int]:
    try:
        status = await mongo.admin.command("serverStatus")
    except AutoReconnect:  # a pooled connection the server closed while the benchmark ran other scenarios
        status = await mongo.admin.command("serverStatus")
    return {kind: int(status["opcounters"].get(kind, 0)) for kind in COUNTED}


def delta(before: Mapping[str, int], after: Mapping[str, int], readings: int, per_reading: int) -> dict[str, int]:
    """What happened between two readings, less what the `readings` taken after `before` added themselves."""
    found = {kind: after[kind] - before[kind] for kind in COUNTED}
    found["command"] -= readings * per_reading
    return found


async def reading_cost(mongo: AsyncMongoClient, tries: int = 5) -> int:
    """Commands one serverStatus reading adds to the counters: the least seen between back-to-back readings."""
    previous = await opcounters(mongo)
    seen = []
    for _ in range(tries):
        current = await opcounters(mongo)
        seen.append(sum(current.values()) - sum(previous.values()))
        previous = current
    return min(seen)


@dataclass
class Count:
    """The commands the server received around `calls` calls of one kind, and what it does when idle."""

    calls: int
    commands: dict[str, int]
    seconds: float  # from the first reading to the last
    idle_per_second: dict[str, float]

    @property
    def total(self) -> int:
        return sum(self.commands.values())

    @property
    def per_call(self) -> float:
        return self.total / self.calls if self.calls else float("nan")

    def per_call_by_kind(self) -> dict[str, float]:
        return {kind: n / self.calls for kind, n in self.commands.items()} if self.calls else {}

    @property
    def idle_per_call(self) -> float:
        """The share of `per_call` an idle stack would have sent in the same time anyway."""
        return sum(self.idle_per_second.values()) * self.seconds / self.calls if self.calls else float("nan")

    def as_json(self) -> dict[str, object]:
        return {
            "calls": self.calls,
            "per_call": self.per_call,
            "per_call_by_kind": self.per_call_by_kind(),
            "total": self.commands,
            "seconds": self.seconds,
            "idle_per_second": self.idle_per_second,
            "idle_per_call": self.idle_per_call,
            "per_call_less_idle": self.per_call - self.idle_per_call,
        }


class Counter:
    """Counts on one server, subtracting its own readings."""

    def __init__(self, mongo: AsyncMongoClient) -> None:
        self.mongo = mongo
        self.per_reading = 0

    async def calibrate(self) -> int:
        self.per_reading = await reading_cost(self.mongo)
        return self.per_reading

    async def idle(self, seconds: float) -> dict[str, float]:
        """Commands per second of each kind while nobody calls the stack."""
        before, started = await opcounters(self.mongo), time.perf_counter()
        await asyncio.sleep(seconds)
        after = await opcounters(self.mongo)
        elapsed = time.perf_counter() - started
        return {kind: n / elapsed for kind, n in delta(before, after, 1, self.per_reading).items()}

    async def quiet(
        self, idle: Mapping[str, float], interval: float = 1.0, limit: float = 30.0
    ) -> tuple[dict[str, int], int, bool]:
        """Wait until the stack is back to its idle pace: one `interval` with no more commands than an idle
        stack sends (twice its rate, and a couple more), at most `limit` seconds. Returns the last
        reading, how many readings it took, and whether it got quiet."""
        threshold = 2 * sum(idle.values()) * interval + 2
        previous, readings = await opcounters(self.mongo), 1
        started = time.perf_counter()
        while time.perf_counter() - started < limit:
            await asyncio.sleep(interval)
            current = await opcounters(self.mongo)
            readings += 1
            if sum(delta(previous, current, 1, self.per_reading).values()) <= threshold:
                return current, readings, True
            previous = current
        return previous, readings, False

    async def around(self, calls: int, run: Callable[[], Awaitable[None]], idle: dict[str, float]) -> Count:
        """Count around `run()`, then until the stack is back to its idle pace: what the calls set off in
        the background (the projector applying their events) is counted with them."""
        before, started = await opcounters(self.mongo), time.perf_counter()
        await run()
        after, readings, _ = await self.quiet(idle, limit=10.0)
        return Count(calls, delta(before, after, readings, self.per_reading), time.perf_counter() - started, idle)
