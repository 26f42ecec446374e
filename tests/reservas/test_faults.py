"""The fault-injection hook, in a real child process: armed it exits with 137 on the spot, unarmed it runs through."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from reservas import faults

PROGRAM = """
from reservas.faults import checkpoint
try:
    print("start", flush=True)
    checkpoint("ValidadorDatos", "after")
    checkpoint("ProcesadorPago", "before")
    print("charging", flush=True)
    checkpoint("ProcesadorPago", "after")
    checkpoint("ProcesadorPago")
    print("end", flush=True)
finally:
    print("cleanup", flush=True)
"""


def run(fault: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != faults.ENV}
    if fault is not None:
        env[faults.ENV] = fault
    return subprocess.run(  # noqa: S603 - this interpreter, a fixed program
        [sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_unarmed_runs_through() -> None:
    done = run(None)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["start", "charging", "end", "cleanup"]


def test_crash_after_exits_137_at_that_point_without_cleanup() -> None:
    done = run("crash-after:ProcesadorPago")
    assert done.returncode == faults.EXIT_CODE
    assert done.stdout.split() == ["start", "charging"]  # no "cleanup": finally blocks do not run
    assert "crashing after ProcesadorPago" in done.stderr


def test_crash_before_exits_before_the_step() -> None:
    done = run("crash-before:ProcesadorPago")
    assert done.returncode == faults.EXIT_CODE
    assert done.stdout.split() == ["start"]


def test_a_fault_at_another_point_does_not_fire() -> None:
    done = run("crash-after:ConfirmadorReserva, crash-before:ValidadorDatos")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["start", "charging", "end", "cleanup"]


def test_a_malformed_fault_is_refused_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(faults.ENV, "explode:ProcesadorPago")
    faults.armed.cache_clear()
    try:
        with pytest.raises(ValueError, match="crash-after"):
            faults.checkpoint("ProcesadorPago")
    finally:
        faults.armed.cache_clear()
