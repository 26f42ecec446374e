"""The system under benchmark: the two stores and the three services, each its own OS process.

Started with infra.procs on free ports (the same process helpers as `eventflow up`), stores
ephemeral (SecantusDB `:memory:`, redis-server without persistence), logs in a temporary
directory. `Cluster` is a context manager: whatever happens, every process it started is
stopped (SIGTERM, then SIGKILL) on exit.

`Stores` are the two stores alone: the floor gets a fresh pair of its own. With MONGODB_URI or
REDIS_URL in the environment, that store is not started but used as given (a real mongod, a real
Redis), and everything the benchmark writes there goes to databases named for this run.

A `Cluster` may run the services of another git revision (`--baseline`): its checkout is their
working directory and comes first on their PYTHONPATH, with its `generated/` stubs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pymongo import AsyncMongoClient

from infra import procs
from infra.procs import ManagedProcess
from tests.bench.revision import pythonpath
from tests.callers import KEY_ENV, NO_LIMITS_ENV

SERVICES = ("usuarios", "eventos", "reservas")
DATABASES = {name: f"eventflow_{name}" for name in SERVICES}
RUN_ID = uuid.uuid4().hex[:8]  # names what this run writes on servers of your own


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


def describe_stores(env: Mapping[str, str] = os.environ) -> str:
    mongo = "MongoDB at MONGODB_URI" if env.get("MONGODB_URI") else "SecantusDB (:memory:)"
    redis = "Redis at REDIS_URL" if env.get("REDIS_URL") else "redis-server"
    return f"{mongo} + {redis}"


class Stores:
    """A MongoDB and a Redis: started here on free ports (SecantusDB `:memory:`, redis-server without
    persistence), or the servers that MONGODB_URI / REDIS_URL name, which are used and never stopped.

    `persistent`: the stores keep their data in the logs directory instead, as `eventflow up` does, so a
    store killed and started again (the outage tests) comes back with what it had written.
    """

    def __init__(self, logs: Path, name: str, env: Mapping[str, str] = os.environ, persistent: bool = False) -> None:
        self.logs = logs
        self.name = name
        self.persistent = persistent
        self.mongo_uri = env.get("MONGODB_URI", "")
        self.redis_url = env.get("REDIS_URL", "")
        self.external = {"mongodb": bool(self.mongo_uri), "redis": bool(self.redis_url)}
        self.processes: dict[str, ManagedProcess] = {}

    def database(self, what: str) -> str:
        """A database name: the usual one on an embedded store, one of this run's on a server of your own."""
        return f"bench_{RUN_ID}_{self.name}_{what}" if self.external["mongodb"] else f"eventflow_{what}"

    async def start(self) -> None:
        if not self.mongo_uri:
            port = procs.free_port()
            storage = self.logs / f"{self.name}-mongodb-data" if self.persistent else ":memory:"
            self.processes["mongodb"] = procs.mongo_process(port, storage, self.logs / f"{self.name}-mongodb.log")
            self.mongo_uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
        if not self.redis_url:
            port = procs.free_port()
            data = self.logs / f"{self.name}-redis-data" if self.persistent else None
            self.processes["redis"] = procs.redis_process(port, data, self.logs / f"{self.name}-redis.log")
            self.redis_url = f"redis://127.0.0.1:{port}/0"
        for store in self.processes.values():
            store.start()
        for store in self.processes.values():
            await asyncio.to_thread(store.wait_listening, 60)

    def stop(self) -> None:
        for process in reversed(self.processes.values()):
            process.stop(timeout=15)

    def mongo(self) -> AsyncMongoClient:
        return AsyncMongoClient(self.mongo_uri, tz_aware=True)


class Cluster:
    """SecantusDB + redis-server + usuarios + eventos + reservas, as processes on free ports.

    `code`: a checkout of another revision whose services to run (None: this checkout's). `persistent`:
    stores that keep their data (see Stores), so `kill` and `restart` can take any process down and back.
    """

    def __init__(
        self,
        reservas_env: Mapping[str, str] | None = None,
        keep_logs: bool = False,
        code: Path | None = None,
        name: str = "system",
        persistent: bool = False,
    ) -> None:
        self.reservas_env = dict(reservas_env or {})
        self.keep_logs = keep_logs
        self.code = code
        self.logs = Path(tempfile.mkdtemp(prefix="eventflow-bench-"))
        self.store = Stores(self.logs, name, persistent=persistent)
        self.services: dict[str, ManagedProcess] = {}
        self.ports = {name: procs.free_port() for name in SERVICES}
        self.databases = {service: self.store.database(service) for service in SERVICES}
        self.died: list[str] = []  # processes found dead when a failed run stopped the others

    @property
    def mongo_uri(self) -> str:
        return self.store.mongo_uri

    @property
    def redis_url(self) -> str:
        return self.store.redis_url

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    @property
    def processes(self) -> dict[str, ManagedProcess]:
        return {**self.services, **self.store.processes}

    def _env(self) -> dict[str, str]:
        # The keys of this run (a revision without auth ignores them); no rate limits: the bench measures purchases.
        env = dict(os.environ, **KEY_ENV, **NO_LIMITS_ENV)
        env.pop("EVENTFLOW_FAULT", None)
        env.update(
            GRPC_BIND_HOST="127.0.0.1",
            MONGODB_URI=self.mongo_uri,
            REDIS_URL=self.redis_url,
            USUARIOS_ADDR=self.address("usuarios"),
            EVENTOS_ADDR=self.address("eventos"),
            PYTHONUNBUFFERED="1",
            **{f"{name.upper()}_PORT": str(port) for name, port in self.ports.items()},
            **{f"{name.upper()}_MONGODB_DATABASE": db for name, db in self.databases.items()},
        )
        if self.code is not None:
            env["PYTHONPATH"] = pythonpath(self.code)
        return env

    async def start(self) -> None:
        await self.store.start()
        env = self._env()
        for name in SERVICES:
            service_env = {**env, **self.reservas_env} if name == "reservas" else env
            log = self.logs / f"{name}.log"
            process = procs.service_process(name, self.ports[name], service_env, log, cwd=self.code)
            self.services[name] = process.start()
        await asyncio.gather(*(wait_serving(self.address(name)) for name in SERVICES))

    def mongo(self) -> AsyncMongoClient:
        return self.store.mongo()

    def kill(self, name: str) -> None:
        """SIGKILL one process (a store or a service): no cleanup, as when it crashes."""
        self.processes[name].kill()

    async def restart(self, name: str) -> None:
        """Start a killed process again, on the same port with the same data; returns once it listens."""
        process = self.processes[name]
        process.stop()  # reaps it and closes its log, which the new one appends to
        process.start()
        await asyncio.to_thread(process.wait_listening, 60)

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
        for process in reversed(self.services.values()):
            process.stop(timeout=15)
        self.store.stop()
        if not self.keep_logs:
            shutil.rmtree(self.logs, ignore_errors=True)

    async def drop_databases(self) -> None:
        """On a MongoDB of your own, remove this run's databases (the services are stopped by then)."""
        if not self.store.external["mongodb"]:
            return
        mongo = self.mongo()
        try:
            for database in self.databases.values():
                await mongo.drop_database(database)
        finally:
            await mongo.close()

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
        if kind is not None:  # the run failed: its logs and who had died are what explains it
            self.keep_logs = True
            self.died = self.dead()
        await asyncio.to_thread(self.stop)
        await self.drop_databases()
