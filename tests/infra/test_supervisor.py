"""`eventflow up` supervises: the restart policy, and the loop that restarts what dies or gives up on a crash loop."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from infra.procs import ManagedProcess
from infra.stack import Options, RestartPolicy, Stack


def test_backoff_doubles_from_half_a_second_to_ten_and_gives_up_at_the_fifth_crash_in_a_minute() -> None:
    policy = RestartPolicy()
    assert [policy.crashed("reservas", t) for t in (0, 1, 2, 3)] == [0.5, 1.0, 2.0, 4.0]
    assert policy.crashed("reservas", 4) is None
    assert policy.crashed("eventos", 4) == 0.5  # each process has its own count


def test_crashes_older_than_the_window_are_forgotten_and_the_delay_is_capped() -> None:
    policy = RestartPolicy(limit=10)
    delays = [policy.crashed("mongodb", t) for t in range(8)]
    assert delays[-1] == 10.0
    assert policy.crashed("mongodb", 1000) == 0.5


def _stack(tmp_path: Path, code: str, **policy: float) -> Stack:
    stack = Stack(Options(data_dir=tmp_path), env={})
    stack.restarts = RestartPolicy(**policy)  # type: ignore[arg-type]
    proc = ManagedProcess("flaky", [sys.executable, "-c", code], port=0, log_path=tmp_path / "flaky.log")
    stack.services = {"flaky": proc.start()}
    return stack


def test_a_process_that_keeps_crashing_stops_the_stack_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = _stack(tmp_path, "import sys; sys.exit(3)", first=0.01, ceiling=0.05)
    assert stack._supervise() == 1
    err = capsys.readouterr().err
    assert err.count("flaky exited unexpectedly (exit code 3); restarting it in") == 4
    assert err.count("flaky restarted") == 4
    assert "5 times within 60 s" in err and "it keeps crashing: stopping everything else" in err
    assert (tmp_path / "flaky.log").read_text().count("--- restarted by eventflow up") == 4


def test_a_process_that_dies_once_is_restarted_and_keeps_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "crashed-once"
    code = (f"import os, pathlib, signal, time; m = pathlib.Path({str(marker)!r})\n"
            "if not m.exists(): m.touch(); os.kill(os.getpid(), signal.SIGKILL)\n"
            "time.sleep(60)")  # fmt: skip
    stack = _stack(tmp_path, code, first=0.01)
    proc = stack.services["flaky"]
    import threading  # noqa: PLC0415

    timer = threading.Timer(2.0, stack._stop.set)
    timer.start()
    try:
        assert stack._supervise() == 0
        assert proc.running, "the restarted process should still be running"
    finally:
        timer.cancel()
        proc.stop()
    err = capsys.readouterr().err
    assert "flaky exited unexpectedly (killed by SIGKILL); restarting it in 0.01 s" in err
    assert err.count("flaky restarted") == 1
