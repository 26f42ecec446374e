"""Building the read models from the event store: the rebuild, and a projector's first catch-up.

The order makes the checkpoint consistent: claim a new generation (projectors stop writing the
old one), note the wall time, capture the event store's current change-stream position P (in
effect its cluster time), (clear the models,) apply every stream, then record "follow from P;
current up to the noted time". An event appended during the scan is either seen by the scan or
delivered by the change stream from P (or both: harmless).

A stream that cannot be applied does not stop a rebuild: it is set aside as a dead letter (`poison.py`) and
the rebuild goes on; its result says how many were. Every dead letter is tried again by a rebuild, and those
whose stream applies now are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TextIO

from pymongo.asynchronous.database import AsyncDatabase

from reservas.projections.checkpoint import Checkpoint, Checkpoints, now
from reservas.projections.dead_letters import DeadLetters
from reservas.projections.poison import PoisonGuard
from reservas.projections.read_models import ReadModels
from reservas.projections.source import StreamSource, current_position

log = logging.getLogger(__name__)


class ProgressBar:
    """`[#####.....] 1234/5000 streams` on a terminal (redrawn in place), a line per 10% otherwise."""

    def __init__(self, total: int, out: TextIO | None = None, width: int = 30, unit: str = "streams") -> None:
        self.total = total
        self.out = out if out is not None else sys.stderr
        self.width = width
        self.unit = unit
        self.tty = self.out.isatty()
        self._drawn = -1.0
        self._decile = -1

    def render(self, done: int) -> str:
        fraction = min(done / self.total, 1.0) if self.total else 1.0
        filled = int(fraction * self.width)
        return f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} {self.unit}"

    def update(self, done: int, final: bool = False) -> None:
        if self.tty:
            if final or time.monotonic() - self._drawn >= 0.1:
                self.out.write("\r" + self.render(done) + ("\n" if final else ""))
                self.out.flush()
                self._drawn = time.monotonic()
            return
        decile = 10 if final or not self.total else min(done * 10 // self.total, 10)
        if decile > self._decile:
            self.out.write(self.render(done) + "\n")
            self.out.flush()
            self._decile = decile


async def _apply_every_stream(
    guard: PoisonGuard,
    bar: ProgressBar | None,
    heartbeat: Callable[[], Awaitable[None]],
    batch: int,
    heartbeat_every: float,
) -> tuple[int, int]:
    """Apply every stream; (how many streams, how many of them were set aside as dead letters)."""
    source = guard.source
    if bar is not None:
        bar.total = await source.count_streams()
        bar.update(0)
    done = dead = 0
    beat = time.monotonic()
    await guard.refresh(force=True)  # every dead letter is tried again
    async for reservas in source.scan(batch):
        dead += len((await guard.project_loaded(reservas)).dead_lettered)
        done += len(reservas)
        if bar is not None:
            bar.update(done)
        if time.monotonic() - beat >= heartbeat_every:
            await heartbeat()
            beat = time.monotonic()
    if bar is not None:
        bar.update(done, final=True)
    return done, dead


@dataclass(frozen=True)
class RebuildResult:
    generation: int
    streams: int
    seconds: float
    #: Streams that could not be applied: set aside in the dead letters (`eventflow projections dead-letters`).
    dead_letters: int = 0

    @property
    def streams_per_second(self) -> float:
        return self.streams / self.seconds if self.seconds > 0 else float("inf")


async def rebuild(
    db: AsyncDatabase,
    *,
    owner: str,
    clear: bool = True,
    expected: Checkpoint | None = None,
    progress: ProgressBar | bool = False,
    batch: int = 200,
    heartbeat_every: float = 2.0,
    guard: PoisonGuard | None = None,
) -> RebuildResult:
    """(Re)build the read models from every stream and reset the checkpoint to match.

    `expected` is the checkpoint the caller saw (None: there was none); if it changed meanwhile,
    someone else is (re)building and RebuildConflict is raised. `clear=False` is the first
    catch-up: the models may already hold some views, which the version guard keeps or updates.
    `guard` applies the streams (a projector's own, on its session); None: one of the rebuild's own.
    """
    started = time.monotonic()
    checkpoints = Checkpoints(db)
    if guard is None:
        guard = PoisonGuard(ReadModels(db), StreamSource(db), DeadLetters(db), by=owner)
    models = guard.models
    await models.ensure_indexes()
    generation = await checkpoints.claim_rebuild(expected, owner)
    hasta = now()  # every event appended before this instant is before P, so the scan sees it;
    position = await current_position(db)  # everything after P comes through the change stream
    log.info("rebuilding read models", extra={"generation": generation, "clear": clear})
    bar = progress if isinstance(progress, ProgressBar) else (ProgressBar(0) if progress else None)
    try:
        if clear:
            await models.clear()
        done, dead = await _apply_every_stream(
            guard, bar, lambda: checkpoints.heartbeat(generation, owner), batch, heartbeat_every
        )
        await checkpoints.finish_rebuild(generation, owner, position, hasta)
    except BaseException:
        # Interrupted (Ctrl-C, an error): do not make others wait for our heartbeat to go stale.
        with contextlib.suppress(Exception):
            await asyncio.shield(checkpoints.abandon_rebuild(generation, owner))
        raise
    result = RebuildResult(generation, done, time.monotonic() - started, dead)
    log.log(
        logging.WARNING if dead else logging.INFO,
        "read models rebuilt" + (": some streams could not be applied (`eventflow projections dead-letters`)" if dead else ""),
        extra={"generation": generation, "streams": done, "dead_letters": dead, "seconds": round(result.seconds, 3)},
    )
    return result
