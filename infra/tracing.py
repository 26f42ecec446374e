"""OpenTelemetry traces: one purchase is one trace across usuarios, eventos and reservas.

What makes a trace:
- `TracingInterceptor` (server, every service): a SERVER span per unary RPC, named `<service>/<Method>`
  (`eventflow.reservas.v1.ReservasService/Reservar`), the child of the W3C `traceparent` the call carries;
  `rpc.*` attributes and the status code the caller got. Health and reflection are not traced (probes).
- `client_span` (reservas.clients): a CLIENT span per call to usuarios or eventos, whose context travels in
  the call's metadata, so the callee's server span is its child.
- `span` (reservas.saga): an INTERNAL span per saga step and per compensation.
Every JSON log line written inside a span carries its `trace_id` and `span_id` (infra.logs).

Off unless configured, by the standard variables (read by `configure` at each service's start):
- `OTEL_TRACES_EXPORTER`: `otlp`, `console`, both (comma-separated), or `none`. Unset: `otlp` if
  `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, else no tracing;
- `OTEL_SDK_DISABLED=true`: no tracing, whatever else is set;
- the SDK's and the exporter's own: `OTEL_SERVICE_NAME` (default: the service's name),
  `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT` (default
  http://localhost:4317), `..._HEADERS`, `..._PROTOCOL` (grpc; http/protobuf if that exporter is installed),
  `OTEL_BSP_*`.
`console` writes each finished span as one line of the service's JSON log (stderr), with its name, ids, parent,
duration, status and attributes: what `eventflow up --trace console` turns on, for a person to read.

Off costs next to nothing: the interceptor leaves the handler as it is, and no span, context or metadata is
made. The spans come from this module's tracer (`install`), not from whatever provider is global, so a test
can trace the three in-process services into memory and take it away again.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

from infra.interceptors import STANDARD_SERVICES, Unary, UnaryInterceptor, status_of

log = logging.getLogger(__name__)

EXPORTERS = ("otlp", "console")
#: Not traced: a probe's Check every few seconds, and reflection's streams, would be most of the traces.
UNTRACED = STANDARD_SERVICES
#: Server spans are errors for these codes only (OpenTelemetry's gRPC conventions): the others are the caller's.
SERVER_ERRORS = frozenset({
    grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS,
})  # fmt: skip

_tracer: trace.Tracer | None = None


def install(provider: trace.TracerProvider) -> None:
    """Trace into `provider` from now on (`configure` does it; a test passes its in-memory one)."""
    global _tracer
    _tracer = provider.get_tracer("eventflow")


def uninstall() -> None:
    """Stop tracing (spans already open still end)."""
    global _tracer
    _tracer = None


def enabled() -> bool:
    return _tracer is not None


def exporters(env: Mapping[str, str]) -> list[str]:
    """The exporters the OTEL_* variables ask for; empty means tracing is off. ValueError names a bad value."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    raw = env.get("OTEL_TRACES_EXPORTER", "").strip()
    if not raw:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        return ["otlp"] if endpoint else []
    names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    unknown = [name for name in names if name not in (*EXPORTERS, "none")]
    if unknown:
        raise ValueError(f"OTEL_TRACES_EXPORTER: unknown exporter {unknown[0]!r} (otlp, console or none), got {raw!r}")
    return [] if "none" in names else list(dict.fromkeys(names))


def _otlp_exporter(env: Mapping[str, str]) -> SpanExporter:
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    protocol = protocol.strip()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

        return OTLPSpanExporter()
    if protocol == "http/protobuf":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
                OTLPSpanExporter as OTLPHttpSpanExporter,
            )
        except ImportError:
            raise ValueError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf needs opentelemetry-exporter-otlp-proto-http "
                "(pip install it), or use grpc"
            ) from None
        return OTLPHttpSpanExporter()
    raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported (grpc or http/protobuf)")


def configure(service: str, env: Mapping[str, str] | None = None) -> TracerProvider | None:
    """Set up tracing as the OTEL_* variables say (see the module); None when they leave it off.

    The provider also becomes OpenTelemetry's global one, and is flushed when the process exits."""
    env = os.environ if env is None else env
    names = exporters(env)
    if not names:
        return None
    # Resource.create reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; the latter wins over our default.
    resource = Resource.create({} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service})
    provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER
    if "otlp" in names:
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(env)))
    if "console" in names:  # at once and in order: a person is reading
        provider.add_span_processor(SimpleSpanProcessor(LogSpanExporter()))
    trace.set_tracer_provider(provider)
    install(provider)
    log.info("tracing", extra={"exporters": names, "service_name": resource.attributes.get(SERVICE_NAME)})
    return provider


class LogSpanExporter(SpanExporter):
    """The `console` exporter: each span as one line of the service's JSON log (logger `eventflow.spans`)."""

    logger = logging.getLogger("eventflow.spans")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            context = span.get_span_context()
            ms = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
            attributes = dict(span.attributes or {})
            outcome = attributes.get("error.type", "")  # a status code or a reason; nothing when it went well
            self.logger.info(
                "span %s %.1f ms%s", span.name, ms, f" {outcome}" if outcome else "",
                extra={
                    "span": span.name,
                    "kind": span.kind.name,
                    "trace_id": trace.format_trace_id(context.trace_id) if context else None,
                    "span_id": trace.format_span_id(context.span_id) if context else None,
                    "parent_id": trace.format_span_id(span.parent.span_id) if span.parent else None,
                    "duration_ms": round(ms, 3),
                    "status": span.status.status_code.name,
                    "attributes": attributes,
                },
            )  # fmt: skip
        return SpanExportResult.SUCCESS


# ---- making spans


def fail(current: trace.Span, kind: str) -> None:
    """Mark `current` failed with `kind` (an error's reason or class: never its message, which may name a person)."""
    current.set_attribute("error.type", kind)
    current.set_status(Status(StatusCode.ERROR, kind))


@contextlib.contextmanager
def _span(name: str, attributes: Mapping[str, Any]) -> Iterator[trace.Span]:
    assert _tracer is not None
    with _tracer.start_as_current_span(
        name, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as current:
        try:
            yield current
        except Exception as error:
            fail(current, getattr(error, "reason", None) or type(error).__name__)
            raise


def span(name: str, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """An INTERNAL span around a block (a saga step); a failure marks it with the error's reason. Off: nothing."""
    if _tracer is None:
        return contextlib.nullcontext()
    return _span(name, attributes)


def _rpc_attributes(method: str) -> dict[str, Any]:
    service, _, name = method.lstrip("/").rpartition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


@contextlib.contextmanager
def _client_span(method: str, metadata: list[tuple[str, str]]) -> Iterator[list[tuple[str, str]]]:
    assert _tracer is not None
    with _tracer.start_as_current_span(
        method.lstrip("/"), kind=SpanKind.CLIENT, attributes=_rpc_attributes(method),
        record_exception=False, set_status_on_exception=False,
    ) as current:  # fmt: skip
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        try:
            yield [*metadata, *carrier.items()]
        except grpc.aio.AioRpcError as error:
            current.set_attribute("rpc.grpc.status_code", error.code().value[0])
            fail(current, error.code().name)
            raise
        except Exception as error:
            fail(current, type(error).__name__)
            raise
        current.set_attribute("rpc.grpc.status_code", grpc.StatusCode.OK.value[0])


def client_span(method: str, metadata: Sequence[tuple[str, str]] = ()) -> contextlib.AbstractContextManager[Any]:
    """A CLIENT span around one call of `method` (`/package.Service/Method`); yields the call's metadata with
    the span's context added (`traceparent`). Off: yields `metadata` as it is."""
    if _tracer is None:
        return contextlib.nullcontext(list(metadata))
    return _client_span(method, list(metadata))


class TracingInterceptor(UnaryInterceptor):
    """A SERVER span per unary call, continuing the caller's trace; mounted outermost, so the span covers the
    whole answer and records the status the caller gets (authentication's refusals included)."""

    def wrap(self, method: str, metadata: Sequence[Any], inner: Unary) -> Unary | None:
        tracer = _tracer
        if tracer is None or method.startswith(UNTRACED):
            return None
        parent = propagate.extract({key: value for key, value in metadata if isinstance(value, str)})
        attributes = _rpc_attributes(method)

        async def traced(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with tracer.start_as_current_span(
                method.lstrip("/"), context=parent, kind=SpanKind.SERVER, attributes=attributes,
                record_exception=False, set_status_on_exception=False,
            ) as current:  # fmt: skip
                error: BaseException | None = None
                try:
                    return await inner(request, context)
                except BaseException as raised:
                    error = raised
                    raise
                finally:
                    code = status_of(context, error)
                    current.set_attribute("rpc.grpc.status_code", code.value[0])
                    if code in SERVER_ERRORS:
                        fail(current, code.name)
                    elif code is not grpc.StatusCode.OK:  # the caller's mistake: an answer, not a failure here
                        current.set_attribute("error.type", code.name)

        return traced


__all__ = [
    "LogSpanExporter", "TracingInterceptor", "client_span", "configure", "enabled", "exporters", "install",
    "span", "uninstall",
]  # fmt: skip
