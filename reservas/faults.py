"""Fault injection: make the process die abruptly at a named point of the saga.

Set `EVENTFLOW_FAULT=crash-after:ProcesadorPago` (or `crash-before:<name>`; several,
comma-separated) and the process exits with status 137 at that checkpoint, through
`os._exit`: no cleanup, no finally blocks, no flushed buffers, as after `kill -9`. The
crash tests use it to kill reservas at every step boundary and check that recovery
settles every reservation after a restart.

The saga calls `checkpoint(name, "before")` / `checkpoint(name, "after")` around each
step (names: ValidadorDatos, ValidadorInventario, ProcesadorPago, ConfirmadorReserva,
plus finer points the saga defines). The variable is read once per process; unset, a
checkpoint does nothing.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Literal

ENV = "EVENTFLOW_FAULT"
EXIT_CODE = 137  # what a shell reports for a process killed by SIGKILL

When = Literal["before", "after"]


@functools.cache
def armed() -> frozenset[tuple[str, str]]:
    """The (when, name) points armed by EVENTFLOW_FAULT, read once per process."""
    raw = os.environ.get(ENV, "").strip()
    points: set[tuple[str, str]] = set()
    for item in filter(None, (part.strip() for part in raw.split(","))):
        action, _, name = item.partition(":")
        if action not in ("crash-before", "crash-after") or not name:
            raise ValueError(f"{ENV} must look like crash-after:<name> or crash-before:<name>; got {item!r}")
        points.add((action.removeprefix("crash-"), name))
    return frozenset(points)


def checkpoint(name: str, when: When = "after") -> None:
    """Exit abruptly with status 137 if EVENTFLOW_FAULT names this point; otherwise do nothing."""
    if (when, name) in armed():
        sys.stderr.write(f"{ENV}: crashing {when} {name}\n")
        sys.stderr.flush()
        os._exit(EXIT_CODE)
