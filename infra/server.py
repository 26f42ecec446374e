"""The gRPC server skeleton every service uses.

`create_server` builds a grpc.aio server with the standard health service, server
reflection, the tracing (infra.tracing), metrics and error-mapping interceptors, over plaintext or TLS,
receiving and sending messages of at most `max_message_bytes` (see infra.limits); `GrpcApp.run_until_signal` serves
until SIGTERM or SIGINT and then shuts down gracefully (in-flight calls finish).
Setup, then serve: the service's own calls are refused (UNAVAILABLE) and health is NOT_SERVING until its check
(its stores answering) has passed and its `setup` (indexes, migrations, background work) has finished, tried
again until it does; a service started before its stores serves once they answer. Health follows the check
afterwards. A check that does not answer within
`check_timeout` counts as failed (and says so in the log) while it goes on: health
never stays at what it was because the check itself got stuck. With `metrics` (infra.metrics), every call is counted
and timed, and `/metrics` is served from `start` until `stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from infra.access import Access, OwnerLookup
from infra.auth import AuthInterceptor, AuthSettings
from infra.errors import DomainError, ErrorMappingInterceptor, Unavailable
from infra.interceptors import HEALTH, Unary, UnaryInterceptor
from infra.limits import DEFAULT_MAX_MESSAGE_BYTES, message_options
from infra.metrics import Metrics, MetricsInterceptor
from infra.ratelimit import RateLimiter
from infra.tracing import TracingInterceptor

log = logging.getLogger(__name__)

HealthCheck = Callable[[], Awaitable[bool]]
Setup = Callable[[], Awaitable[None]]
#: Methods served before setup has finished: health, so a supervisor sees NOT_SERVING (reflection's streams are
#: not held back either: the setup gate holds unary calls only).
SERVED_BEFORE_SETUP = (HEALTH,)
C = TypeVar("C")


def config_or_exit(from_env: Callable[[], C]) -> C:
    """A service's configuration, or exit code 2 with one log line naming what to set (a key with no
    default that is missing, a setting that is malformed): `python -m <service>` uses it before serving."""
    try:
        return from_env()
    except ValueError as error:  # infra.keys.KeyConfigError is one
        log.error("cannot start: %s", error)
        sys.exit(2)


@dataclass(frozen=True)
class ServiceBinding:
    """One gRPC service to mount: its full name, the generated `add_*_to_server` and the servicer."""

    full_name: str
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: Any


class UntilSetUp(UnaryInterceptor):
    """Refuses the service's calls with UNAVAILABLE until `open()`: nothing is served before setup has finished
    (a unique index missing, a migration half-way). Health and reflection pass."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.is_open = False

    def open(self) -> None:
        self.is_open = True

    def wrap(self, method: str, metadata: Sequence[Any], inner: Unary) -> Unary | None:
        if self.is_open or method.startswith(SERVED_BEFORE_SETUP):
            return None

        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
            raise Unavailable(f"{self.service} is starting (waiting for its stores); try again shortly")

        return refuse


@dataclass
class GrpcApp:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: list[str]
    health_check: HealthCheck
    check_interval: float = 2.0
    grace: float = 10.0
    tls: bool = False
    #: A check that has not answered after this long counts as failed (NOT_SERVING) until it does.
    check_timeout: float = 10.0
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    metrics: Metrics | None = None
    #: Run once, after the first passing check and before anything is served; tried again until it finishes.
    setup: Setup | None = None
    gate: UntilSetUp = field(default_factory=lambda: UntilSetUp("the service"))
    _monitor: asyncio.Task[None] | None = None
    _check: asyncio.Task[bool] | None = None
    _late: bool = False

    async def start(self) -> None:
        await self.server.start()
        if self.metrics is not None:
            self.metrics.start()
        self._monitor = asyncio.create_task(self._serve(), name="health-monitor")
        log.info("listening", extra={"port": self.port, "services": self.service_names, "tls": self.tls})

    async def _serve(self) -> None:
        """Set up, then serve: open the service's calls, and let health follow the check."""
        await self._set_up()
        self.gate.open()
        await self._watch_health()

    async def _set_up(self) -> None:
        """Once the check passes, run `setup` to the end; a setup that fails (a store gone again) waits for the
        next passing check and starts over: every part of it is idempotent."""
        while True:
            if await self._checked():
                if self.setup is None:
                    return
                try:
                    await self.setup()
                    log.info("set up")
                    return
                except Exception:  # noqa: BLE001 - its stores failed half-way: start over when they answer
                    log.warning("setup did not finish; it starts over once the stores answer", exc_info=True)
            await asyncio.sleep(min(self.check_interval, 0.5))

    async def _set(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    async def _run_check(self) -> bool:
        try:
            return await self.health_check()
        except Exception:  # a failing check means "not serving", never a dead monitor
            log.exception("health check failed")
            return False

    async def _checked(self) -> bool:
        """The check's answer, or False while it has taken more than `check_timeout`. A late check is not
        cancelled (it may be a store operation half-way): the next round waits
        for the same one, and the log says when it got stuck and when it answered again."""
        if self._check is None:
            self._check = asyncio.create_task(self._run_check(), name="health-check")
        done, _ = await asyncio.wait({self._check}, timeout=self.check_timeout)
        if not done:
            if not self._late:
                self._late = True
                log.warning("health check has not answered", extra={"seconds": self.check_timeout})
            return False
        if self._late:
            self._late = False
            log.info("health check answered again")
        ok, self._check = self._check.result(), None
        return ok

    async def _watch_health(self) -> None:
        current = None
        while True:
            ok = await self._checked()
            status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
            if status != current:
                await self._set(status)
                log.info("health", extra={"serving": ok})
                current = status
            await asyncio.sleep(self.check_interval if ok else min(self.check_interval, 0.5))

    async def stop(self, grace: float | None = None) -> None:
        for task in (self._monitor, self._check):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.grace if grace is None else grace)
        for callback in reversed(self.on_stop):
            try:
                await callback()
            except Exception:
                log.exception("error while stopping")
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.stop)  # waits for a scrape in progress: not on the loop
        log.info("stopped")

    async def run_until_signal(self) -> None:
        """Serve until SIGTERM or SIGINT, then stop gracefully."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        log.info("shutting down")
        await self.stop()


async def create_server(
    *,
    bindings: Iterable[ServiceBinding],
    address: str,
    domain: str,
    health_check: HealthCheck,
    setup: Setup | None = None,
    error_table: Mapping[type[DomainError], grpc.StatusCode] | None = None,
    check_interval: float = 2.0,
    check_timeout: float = 10.0,
    grace: float = 10.0,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    auth: AuthSettings | None,
    owner_of: OwnerLookup | None = None,
    limiter: RateLimiter | None = None,
    credentials: grpc.ServerCredentials | None = None,
    metrics: Metrics | None = None,
) -> GrpcApp:
    """Build (not start) a server with health, reflection, authentication and the error mapping.

    `setup` runs once the `health_check` first passes, before any call of the service is served (see GrpcApp).

    Every call but health and reflection needs a token `auth` verifies and infra/access.py allows;
    `owner_of` says whose a reservation is (reservas); `limiter` applies a rate limit per identity;
    `credentials` (infra.tls) serve TLS, None plaintext. A request larger than `max_message_bytes` is
    refused by gRPC (RESOURCE_EXHAUSTED); so is a reply. Port 0 picks a free port. `metrics`: the app's
    registry and /metrics endpoint; the metrics interceptor is outermost but for tracing's, so it counts the
    status the caller gets, authentication's refusals included.
    """
    if auth is None:
        raise ValueError(f"{domain}: no keys to verify tokens with (see infra/keys.py); a server never runs open")
    bindings = list(bindings)
    # The error mapping is outermost, so authentication's refusals become rich statuses too.
    gate = UntilSetUp(domain.split(".")[0])
    interceptors: list[grpc.aio.ServerInterceptor] = [ErrorMappingInterceptor(domain, error_table), AuthInterceptor(
        auth.verifier, Access(owner_of), limiter.admit if limiter is not None else None
    ), gate]
    if metrics is not None:
        interceptors.insert(0, MetricsInterceptor(metrics.grpc))
    # Outermost: the span covers the whole call (does nothing while tracing is off; see infra.tracing).
    interceptors.insert(0, TracingInterceptor())
    server = grpc.aio.server(interceptors=interceptors, options=message_options(max_message_bytes))
    for binding in bindings:
        binding.add_to_server(binding.servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [b.full_name for b in bindings]
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot bind {address}")
    return GrpcApp(
        server, port, health_servicer, names, health_check, check_interval, grace,
        tls=credentials is not None, check_timeout=check_timeout, metrics=metrics, setup=setup, gate=gate,
    )
