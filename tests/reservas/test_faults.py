"""The fault-injection hook, in a real child process: armed it exits with 137 on the spot or holds the purchase
there until the process is killed; unarmed it runs through. Within a process, `holding` holds until released."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from reservas import faults

PROGRAM = """
import asyncio
from reservas.faults import checkpoint

async def purchase():
    try:
        print("start", flush=True)
        await checkpoint("ValidadorDatos", "after")
        await checkpoint("ProcesadorPago", "before")
        print("charging", flush=True)
        await checkpoint("ProcesadorPago", "after")
        await checkpoint("ProcesadorPago")
        print("end", flush=True)
    finally:
        print("cleanup", flush=True)

asyncio.run(purchase())
"""


def environment(fault: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != faults.ENV}
    if fault is not None:
        env[faults.ENV] = fault
    return env


def run(fault: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - this interpreter, a fixed program
        [sys.executable, "-c", PROGRAM], env=environment(fault), capture_output=True, text=True, timeout=60, check=False
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
            asyncio.run(faults.checkpoint("ProcesadorPago"))
    finally:
        faults.armed.cache_clear()


def test_hold_before_stops_there_says_so_and_waits_to_be_killed() -> None:
    child = subprocess.Popen(  # noqa: S603 - this interpreter, a fixed program
        [sys.executable, "-c", PROGRAM], env=environment("hold-before:ProcesadorPago"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stderr is not None and child.stdout is not None
        assert child.stderr.readline().startswith("EVENTFLOW_FAULT: holding before ProcesadorPago")
        assert child.poll() is None  # still there, held
    finally:
        child.kill()
        child.wait()
    assert child.stdout.read().split() == ["start"]  # nothing after the point: not even cleanup


async def test_holding_within_the_process_until_released() -> None:
    passed: list[str] = []

    async def purchase() -> None:
        await faults.checkpoint("ProcesadorPago", "before")
        passed.append("charged")

    with faults.holding("ProcesadorPago", "before") as hold:
        going = asyncio.ensure_future(purchase())
        await hold.reached.wait()
        assert passed == [] and not going.done()
        hold.release()
        await going
    assert passed == ["charged"]
    await faults.checkpoint("ProcesadorPago", "before")  # after the block, nothing is held
