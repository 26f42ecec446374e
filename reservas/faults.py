"""Fault injection: stop a purchase at a named point of the saga, by crashing the process or by holding it there.

Set `EVENTFLOW_FAULT=crash-after:ProcesadorPago` (or `crash-before:<name>`; several,
comma-separated) and the process exits with status 137 at that checkpoint, through
`os._exit`: no cleanup, no finally blocks, no flushed buffers, as after `kill -9`. The
crash tests use it to kill reservas at every step boundary and check that recovery
settles every reservation after a restart.

`hold-after:<name>` / `hold-before:<name>` stops every purchase that reaches the point there for
good, while the process goes on serving (its leases renewed, its other calls answered), and says
so on stderr ("EVENTFLOW_FAULT: holding before ProcesadorPago (reserva <id>)"): a test that waits
for that line and then kills the process with -9 knows where the purchase was, instead of racing
a slow payment. Within one process, `holding(name, when)` does the same until the test releases
the hold (tests that run reservas in their own process).

The saga calls `checkpoint(name, "before")` / `checkpoint(name, "after")` around each
step (names: ValidadorDatos, ValidadorInventario, ProcesadorPago, ConfirmadorReserva,
plus finer points the saga defines). The variable is read once per process; unset, and
with nothing held, a checkpoint does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from infra.logs import reserva_id_var

ENV = "EVENTFLOW_FAULT"
EXIT_CODE = 137  # what a shell reports for a process killed by SIGKILL

When = Literal["before", "after"]
Action = Literal["crash", "hold"]


@functools.cache
def armed() -> dict[tuple[str, str], Action]:
    """The (when, name) points armed by EVENTFLOW_FAULT and what happens there, read once per process."""
    raw = os.environ.get(ENV, "").strip()
    points: dict[tuple[str, str], Action] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        point, _, name = item.partition(":")
        action, _, when = point.partition("-")
        if action not in ("crash", "hold") or when not in ("before", "after") or not name:
            raise ValueError(
                f"{ENV} must look like crash-after:<name>, crash-before:<name>, hold-after:<name> or "
                f"hold-before:<name>; got {item!r}"
            )
        points[(when, name)] = action  # type: ignore[assignment]
    return points


@dataclass
class Hold:
    """Purchases stopped at a checkpoint (`holding`): `reached` once one is there, `release` lets them go on."""

    reached: asyncio.Event = field(default_factory=asyncio.Event)
    reserva_ids: list[str] = field(default_factory=list)
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        self._released.set()


_held: dict[tuple[str, str], Hold] = {}


@contextlib.contextmanager
def holding(name: str, when: When = "before") -> Iterator[Hold]:
    """Within this process, hold every purchase that reaches the point until `release` (or the block's end)."""
    hold = Hold()
    _held[(when, name)] = hold
    try:
        yield hold
    finally:
        if _held.get((when, name)) is hold:
            del _held[(when, name)]
        hold.release()


async def checkpoint(name: str, when: When = "after") -> None:
    """Exit abruptly with status 137 or hold the purchase if this point is armed; otherwise do nothing."""
    action = armed().get((when, name))
    if action == "crash":
        sys.stderr.write(f"{ENV}: crashing {when} {name}\n")
        sys.stderr.flush()
        os._exit(EXIT_CODE)
    hold = _held.get((when, name))
    if hold is None and action != "hold":
        return
    reserva_id = reserva_id_var.get() or ""
    sys.stderr.write(f"{ENV}: holding {when} {name} (reserva {reserva_id})\n")
    sys.stderr.flush()
    if hold is None:  # armed by EVENTFLOW_FAULT: until the process is killed
        await asyncio.Event().wait()
        return
    hold.reserva_ids.append(reserva_id)
    hold.reached.set()
    await hold._released.wait()
