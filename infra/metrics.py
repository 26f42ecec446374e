"""Prometheus metrics every service shares: the gRPC server series, the process collectors, and `/metrics`.

Each app has its own `Metrics` (its own CollectorRegistry), so several servers in one process (the tests run
the three in one) never collide; a service's own series (reservas.metrics) register on the same registry.

The gRPC series follow go-grpc-prometheus, which dashboards and alerts already know:

- `grpc_server_started_total{grpc_type,grpc_service,grpc_method}`: calls received;
- `grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}`: calls answered, by status code
  (authentication's refusals too: UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED);
- `grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method}`: a histogram of the time to answer.

Every app also exports `eventflow_build_info{service,version}` (always 1: the installed eventflow's version, as
`<x>_build_info` gauges conventionally do) and, from the process collector, `process_start_time_seconds`: with
them `eventflow status` shows what runs and for how long without an RPC of its own.

Only unary calls are counted: every EventFlow RPC is unary, and so is health's Check (reflection and health's
Watch are streams). `/metrics` is served by prometheus_client's HTTP server (a daemon thread) on the service's
bind host and `<SERVICE>_METRICS_PORT`; 0 serves none. A busy port is logged and the service serves on without
it: metrics are never a reason to refuse a purchase.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, GCCollector, Histogram, PlatformCollector
from prometheus_client import ProcessCollector
from prometheus_client import start_http_server

from infra.interceptors import Unary, UnaryInterceptor, status_of
from infra.ports import env_port

log = logging.getLogger(__name__)

#: Latency buckets (seconds): a read takes milliseconds, a purchase tens to hundreds, a slow payment seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: The default metrics ports, one per service (the variable each Config reads: <SERVICE>_METRICS_PORT).
DEFAULT_PORTS = {"usuarios": 9451, "eventos": 9452, "reservas": 9453}
#: The standalone projector's (`eventflow projector`, PROJECTOR_METRICS_PORT): below the services', since the
#: replicas of `eventflow up --replicas-reservas N` take the ports after reservas'.
PROJECTOR_DEFAULT_PORT = 9450


def version() -> str:
    """The installed eventflow distribution's version ("unknown" when run from a tree that is not installed)."""
    try:
        return importlib.metadata.version("eventflow")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def metrics_port(env: Mapping[str, str], service: str) -> int:
    """`<SERVICE>_METRICS_PORT` (default DEFAULT_PORTS[service], or PROJECTOR_DEFAULT_PORT; 0: no /metrics)."""
    default = PROJECTOR_DEFAULT_PORT if service == "projector" else DEFAULT_PORTS[service]
    return env_port(env, f"{service.upper()}_METRICS_PORT", default, zero="no /metrics")


class GrpcServerMetrics:
    """The go-grpc-prometheus server series, on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.started = Counter("grpc_server_started_total", "RPCs started on the server.", labels, registry=registry)
        self.handled = Counter(
            "grpc_server_handled_total", "RPCs completed on the server, by status code.", [*labels, "grpc_code"],
            registry=registry,
        )  # fmt: skip
        self.handling = Histogram(
            "grpc_server_handling_seconds", "Time to answer an RPC, in seconds.", labels,
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip


class Metrics:
    """One app's metrics: its registry (with the process and Python collectors), the gRPC series, and the
    `/metrics` endpoint on `host:port` (port 0: none), started and stopped with the app."""

    def __init__(self, service: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.service = service
        self.host = host.strip("[]")  # "[::]" is how a gRPC address spells it; an HTTP server wants "::"
        self.port = port
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.grpc = GrpcServerMetrics(self.registry)
        build_info = Gauge(
            "eventflow_build_info", "The EventFlow build this process runs (always 1).", ["service", "version"],
            registry=self.registry,
        )  # fmt: skip
        build_info.labels(service, version()).set(1)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str | None:
        """host:port of /metrics while it is served, else None."""
        if self._server is None:
            return None
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"{host}:{self._server.server_port}"

    def start(self) -> None:
        if self.port == 0 or self._server is not None:
            return
        try:
            self._server, self._thread = start_http_server(self.port, addr=self.host, registry=self.registry)
        except OSError as error:
            log.error("cannot serve /metrics: serving without it", extra={"port": self.port, "error": str(error)})
            return
        log.info("metrics", extra={"address": f"http://{self.address}/metrics"})

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None


class MetricsInterceptor(UnaryInterceptor):
    """Counts every unary call and times it; mounted outermost, so it sees the status the caller gets
    (the error mapping's and authentication's refusals included)."""

    def __init__(self, metrics: GrpcServerMetrics) -> None:
        self.metrics = metrics

    def wrap(self, method: str, metadata: Sequence[Any], inner: Unary) -> Unary:
        service, _, name = method.lstrip("/").rpartition("/")
        labels = ("unary", service, name)
        started = self.metrics.started.labels(*labels)
        handling = self.metrics.handling.labels(*labels)
        handled = self.metrics.handled

        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started.inc()
            begin = time.perf_counter()
            error: BaseException | None = None
            try:
                return await inner(request, context)
            except BaseException as raised:
                error = raised
                raise
            finally:
                handling.observe(time.perf_counter() - begin)
                handled.labels(*labels, status_of(context, error).name).inc()

        return observed


__all__ = [
    "DEFAULT_PORTS", "GrpcServerMetrics", "LATENCY_BUCKETS", "Metrics", "MetricsInterceptor", "metrics_port",
    "PROJECTOR_DEFAULT_PORT", "version",
]
