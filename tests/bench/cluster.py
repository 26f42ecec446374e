"""The system under benchmark: the two stores and the three services, each its own OS process.

Started with infra.procs on free ports (the same process helpers as `eventflow up`), stores
ephemeral (SecantusDB `:memory:`, redis-server without persistence), logs in a temporary
directory. `Cluster` is a context manager: whatever happens, every process it started is
stopped (SIGTERM, then SIGKILL) on exit.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pymongo import AsyncMongoClient

from infra import procs
from infra.procs import ManagedProcess

SERVICES = ("usuarios", "eventos", "reservas")
DATABASES = {name: f"eventflow_{name}" for name in SERVICES}


async def wait_serving(address: str, timeout: float = 90.0) -> None:
    """Until the server at `address` reports SERVING through the standard health service."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if loop.time() > deadline:
                raise TimeoutError(f"{address} did not report SERVING within {timeout:.0f}s")
            await asyncio.sleep(0.1)


def memory_kib(pid: int) -> dict[str, int]:
    """VmHWM (peak resident set) and VmRSS of a running process, in KiB, from /proc/<pid>/status."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                found[key] = int(value.split()[0])
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()  # after "(comm)", which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Cluster:
    """SecantusDB + redis-server + usuarios + eventos + reservas, as processes on free ports."""

    def __init__(self, reservas_env: Mapping[str, str] | None = None, keep_logs: bool = False) -> None:
        self.reservas_env = dict(reservas_env or {})
        self.keep_logs = keep_logs
        self.logs = Path(tempfile.mkdtemp(prefix="eventflow-bench-"))
        self.stores: dict[str, ManagedProcess] = {}
        self.services: dict[str, ManagedProcess] = {}
        self.ports = {name: procs.free_port() for name in SERVICES}
        self.mongo_uri = ""
        self.redis_url = ""

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    @property
    def processes(self) -> dict[str, ManagedProcess]:
        return {**self.services, **self.stores}

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("EVENTFLOW_FAULT", None)
        env.update(
            GRPC_BIND_HOST="127.0.0.1",
            MONGODB_URI=self.mongo_uri,
            REDIS_URL=self.redis_url,
            USUARIOS_ADDR=self.address("usuarios"),
            EVENTOS_ADDR=self.address("eventos"),
            PYTHONUNBUFFERED="1",
            **{f"{name.upper()}_PORT": str(port) for name, port in self.ports.items()},
            **{f"{name.upper()}_MONGODB_DATABASE": db for name, db in DATABASES.items()},
        )
        return env

    async def start(self) -> None:
        mongo_port, redis_port = procs.free_port(), procs.free_port()
        self.stores["mongodb"] = procs.mongo_process(mongo_port, ":memory:", self.logs / "mongodb.log").start()
        self.stores["redis"] = procs.redis_process(redis_port, None, self.logs / "redis.log").start()
        for store in self.stores.values():
            await asyncio.to_thread(store.wait_listening, 60)
        self.mongo_uri = f"mongodb://127.0.0.1:{mongo_port}/?directConnection=true"
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        env = self._env()
        for name in SERVICES:
            service_env = {**env, **self.reservas_env} if name == "reservas" else env
            process = procs.service_process(name, self.ports[name], service_env, self.logs / f"{name}.log")
            self.services[name] = process.start()
        await asyncio.gather(*(wait_serving(self.address(name)) for name in SERVICES))

    def mongo(self) -> AsyncMongoClient:
        return AsyncMongoClient(self.mongo_uri, tz_aware=True)

    def memory(self) -> dict[str, dict[str, int]]:
        """Peak and current RSS of every process still running."""
        return {name: memory_kib(p.proc.pid) for name, p in self.processes.items() if p.running and p.proc}

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by every process still running."""
        return {name: cpu_seconds(p.proc.pid) for name, p in self.processes.items() if p.running and p.proc}

    def dead(self) -> list[str]:
        """Processes that exited on their own (a crash under load), with their exit codes."""
        return [f"{name} (exit {p.proc.returncode})" for name, p in self.processes.items() if p.proc and not p.running]

    def stop(self) -> None:
        for process in [*reversed(self.services.values()), *reversed(self.stores.values())]:
            process.stop(timeout=15)
        if not self.keep_logs:
            shutil.rmtree(self.logs, ignore_errors=True)

    async def __aenter__(self) -> Cluster:
        try:
            await self.start()
        except BaseException:
            self.keep_logs = True
            await asyncio.to_thread(self.stop)
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)
