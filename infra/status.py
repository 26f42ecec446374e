"""`eventflow status`: one look at a running stack.

For each process: its health (grpc.health.v1 Check), the version it runs and how long it has been up (its
/metrics: `eventflow_build_info` and `process_start_time_seconds`, see infra.metrics). For the system: the sagas
open and the age of the oldest (reservas' /metrics, summed over its replicas), the projector's lag (reservas'
/metrics when the projector is embedded, a standalone projector's when given), and the tickets left on the events
on sale (eventos' ListEventos from now on, soonest first, with an admin token; without one, reservas'
`eventflow_reservas_tickets_left`, which names only the events it sold lately).

The stack is found as `eventflow up` lays it out (the same *_PORT, *_METRICS_PORT variables, --data-dir for the
keys that mint the admin token and the certificates of --tls), or given by addresses (--usuarios, --eventos,
--reservas; each service's /metrics on the same host unless --*-metrics says otherwise). Every check runs at
once with a short timeout; what does not answer shows as down, the rest is printed all the same, and the exit
code is 1 whenever something is down or could not be read.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from eventflow.eventos.v1 import eventos_pb2, eventos_pb2_grpc
from infra import certs, keys, tls
from infra.auth import Role, TokenIssuer
from infra.metrics import metrics_port
from infra.stack import SERVICES, Options, Stack, StackError

#: What a process reports when it does not answer at all.
DOWN = "down"
#: The life of the admin token status mints for its one ListEventos.
TOKEN_TTL_SECONDS = 60.0


@dataclass(frozen=True)
class Endpoint:
    """One process to look at: `service` is usuarios, eventos, reservas or projector; `name` tells replicas
    apart (reservas-2). `grpc` is None for a projector (it serves no RPC); `metrics` is None when it serves none."""

    name: str
    service: str
    grpc: str | None
    metrics: str | None


@dataclass
class Targets:
    endpoints: list[Endpoint]
    client_tls: tls.ClientTLS | None = None
    #: An admin token for ListEventos; None: the tickets come from reservas' /metrics.
    token: str | None = None
    #: Why there is no token (shown as a note, not a failure).
    token_note: str = ""
    timeout: float = 3.0
    events: int = 20


class StatusError(Exception):
    """A mistake in what the person asked for (a bad address, unreadable certificates): exit code 2."""


# -- finding the stack ---------------------------------------------------------------------------------------


def _address(text: str, what: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise StatusError(f"{what} must be HOST:PORT, got {text!r}")
    return text


def _host_of(address: str) -> str:
    return address.rpartition(":")[0]


def discover(
    env: Mapping[str, str],
    *,
    data_dir: Path = Path(".data"),
    host: str = "127.0.0.1",
    replicas: int = 1,
    use_tls: bool = False,
    given: Mapping[str, Sequence[str]] | None = None,
    given_metrics: Mapping[str, Sequence[str]] | None = None,
    projector_metrics: Sequence[str] = (),
    token: str | None = None,
    timeout: float = 3.0,
    events: int = 20,
) -> Targets:
    """The processes of the stack `eventflow up` runs with this environment and data directory, but for the
    services given by address (`given`: service -> its gRPC addresses, several for reservas' replicas;
    `given_metrics`: their /metrics, in the same order, default the same host on the service's metrics port)."""
    given, given_metrics = given or {}, given_metrics or {}
    try:
        stack = Stack(Options(data_dir=data_dir, host=host, reservas_replicas=replicas, tls=use_tls), env)
    except StackError as error:
        raise StatusError(str(error)) from None
    endpoints: list[Endpoint] = []
    for spec in SERVICES:
        addresses = [_address(a, f"--{spec.name}") for a in given.get(spec.name, [])]
        metrics = [_address(a, f"--{spec.name}-metrics") for a in given_metrics.get(spec.name, [])]
        if len(metrics) > max(len(addresses), 1):
            raise StatusError(f"more --{spec.name}-metrics than --{spec.name} addresses")
        if addresses:
            port = metrics_port(env, spec.name)
            for k, address in enumerate(addresses):
                name = spec.name if k == 0 else f"{spec.name}-{k + 1}"
                scraped = metrics[k] if k < len(metrics) else (f"{_host_of(address)}:{port}" if port else None)
                endpoints.append(Endpoint(name, spec.name, address, scraped))
            continue
        names = [spec.name, *(stack.replicas if spec.name == "reservas" else [])]
        for k, name in enumerate(names):
            scraped = metrics[k] if k < len(metrics) else stack.metrics_address(name)
            endpoints.append(Endpoint(name, spec.name, stack.address(name), scraped))
    for k, address in enumerate(projector_metrics):
        name = "projector" if k == 0 else f"projector-{k + 1}"
        endpoints.append(Endpoint(name, "projector", None, _address(address, "--projector-metrics")))
    client_tls = _client_tls(stack.certs_dir) if use_tls else None
    note = ""
    if token is None:
        token, note = _mint_admin_token(env, stack.data_dir / "keys")
    return Targets(endpoints, client_tls, token, note, timeout, events)


def _client_tls(certs_dir: Path) -> tls.ClientTLS:
    """The operator's certificate of `eventflow certs` (usuarios and eventos require one)."""
    operator = certs.files(certs_dir, certs.OPERATOR)
    try:
        return tls.client_from_files(certs_dir / "ca.pem", operator.cert, operator.key)
    except tls.TLSConfigError as error:
        raise StatusError(f"--tls: {error} (`eventflow certs --dir {certs_dir}` makes them)") from None


def _mint_admin_token(env: Mapping[str, str], keys_dir: Path) -> tuple[str | None, str]:
    """A short-lived admin token signed with the issuer's key (EVENTFLOW_ISSUER_PRIVATE_KEY[_FILE], or
    <data dir>/keys/issuer.key as `eventflow up` made it), as `eventflow token` would; (None, why) without one."""
    try:
        issuer = TokenIssuer(keys.private_key(env, keys.ISSUER_PRIVATE_KEY, keys.KeyFiles(keys_dir).issuer_private))
    except (OSError, ValueError) as error:
        return None, f"no issuer key to mint a token with (or pass --token): {error}"
    return issuer.mint(Role.ADMIN, "eventflow-status", ttl_seconds=TOKEN_TTL_SECONDS), ""


# -- looking -------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass
class Look:
    """What one endpoint answered."""

    endpoint: Endpoint
    health: str = DOWN
    detail: str = ""
    samples: list[Sample] | None = None  # None: /metrics did not answer (or is not served)
    metrics_error: str = ""

    def value(self, name: str, **labels: str) -> float | None:
        for sample in self.samples or []:
            if sample.name == name and labels.items() <= sample.labels.items():
                return sample.value
        return None


def check_health(address: str, client_tls: tls.ClientTLS | None, timeout: float) -> tuple[str, str]:
    """(SERVING | NOT_SERVING | ... | down, detail) of the server at `address` as a whole."""
    with tls.channel(address, client_tls) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError as error:
            code, details = error.code(), error.details()  # type: ignore[attr-defined]
            if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                return DOWN, f"no answer within {timeout:g} s"
            if code is grpc.StatusCode.UNAVAILABLE:  # grpc's message ends with the cause: "Connection refused"
                return DOWN, str(details).rsplit(": ", 1)[-1]
            return code.name, str(details)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status), ""


def scrape(address: str, timeout: float) -> list[Sample]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout) as reply:  # noqa: S310 - http only
        text = reply.read().decode("utf-8", "replace")
    return [
        Sample(s.name, dict(s.labels), s.value) for family in text_string_to_metric_families(text) for s in family.samples
    ]


def _look(endpoint: Endpoint, targets: Targets) -> Look:
    look = Look(endpoint)
    if endpoint.metrics is not None:
        try:
            look.samples = scrape(endpoint.metrics, targets.timeout)
        except (OSError, ValueError) as error:
            look.metrics_error = str(getattr(error, "reason", None) or error)
    if endpoint.grpc is not None:
        look.health, look.detail = check_health(endpoint.grpc, targets.client_tls, targets.timeout)
        if look.health == DOWN and look.samples is not None and targets.client_tls is None:
            # The process lives (its /metrics answered) but hung up on a plaintext call: a TLS server.
            look.detail += "; its /metrics answers: does it serve TLS? (--tls)"
    else:  # a projector: up when its /metrics answers
        look.health = "UP" if look.samples is not None else DOWN
        look.detail = look.metrics_error
    return look


def events_on_sale(address: str, targets: Targets) -> tuple[list[dict[str, Any]], bool]:
    """The first `targets.events` events from now on (soonest first: ListEventos' default), and whether there
    are more."""
    assert targets.token is not None
    with tls.channel(address, targets.client_tls) as channel:
        request = eventos_pb2.ListEventosRequest(page_size=targets.events)
        reply = eventos_pb2_grpc.EventosServiceStub(channel).ListEventos(
            request, timeout=targets.timeout, metadata=(("authorization", f"Bearer {targets.token}"),)
        )
    listed = [
        {
            "id": e.id,
            "nombre": e.nombre,
            "fecha": e.fecha.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z"),
            "entradas_disponibles": e.entradas_disponibles,
            "aforo_total": e.aforo_total,
        }
        for e in reply.eventos
    ]
    return listed, bool(reply.next_page_token)


# -- the report ----------------------------------------------------------------------------------------------


@dataclass
class Report:
    checked_at: datetime
    looks: list[Look]
    eventos: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def services(self) -> list[dict[str, Any]]:
        now = self.checked_at.timestamp()
        rows = []
        for look in self.looks:
            e = look.endpoint
            version = next(
                (s.labels.get("version") for s in look.samples or [] if s.name == "eventflow_build_info"), None
            )
            started = look.value("process_start_time_seconds")
            rows.append({
                "name": e.name,
                "service": e.service,
                "address": e.grpc,
                "health": look.health,
                "detail": look.detail or None,
                "metrics": e.metrics,
                "version": version,
                "started_at": _iso(started) if started is not None else None,
                "uptime_seconds": round(max(0.0, now - started), 1) if started is not None else None,
            })  # fmt: skip
        return rows

    def answered(self, service: str) -> list[Look]:
        return [look for look in self.looks if look.endpoint.service == service and look.samples is not None]

    def sagas(self) -> dict[str, Any]:
        reservas = self.answered("reservas")
        opened = [v for look in reservas if (v := look.value("eventflow_reservas_sagas_open")) is not None]
        oldest = [v for look in reservas if (v := look.value("eventflow_reservas_oldest_saga_seconds")) is not None]
        return {
            "open": int(sum(opened)) if opened else None,
            "oldest_seconds": round(max(oldest), 1) if oldest else None,
        }

    def projector(self) -> dict[str, Any]:
        """The worst of the projectors that report (embedded in reservas, or standalone)."""
        reporting = [
            look for look in [*self.answered("reservas"), *self.answered("projector")]
            if look.value("eventflow_projector_events_behind") is not None
        ]  # fmt: skip
        lags = [v for look in reporting if (v := look.value("eventflow_projector_lag_seconds")) is not None]
        behind = [look.value("eventflow_projector_events_behind") or 0.0 for look in reporting]
        # Streams each set aside since it started (the standing list: `eventflow projections dead-letters`).
        dead = [look.value("eventflow_projector_dead_letters_total") or 0.0 for look in reporting]
        return {
            "reported_by": [look.endpoint.name for look in reporting],
            "lag_seconds": round(max(lags), 2) if lags else None,
            "events_behind": int(max(behind)) if behind else None,
            "dead_lettered": int(max(dead)) if dead else None,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "checked_at": _iso(self.checked_at.timestamp()),
            "ok": self.ok,
            "services": self.services(),
            "sagas": self.sagas(),
            "projector": self.projector(),
            "eventos": self.eventos,
            "problems": self.problems,
        }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def collect(targets: Targets, clock: Callable[[], float] = time.time) -> Report:
    """Look at every endpoint at once; the events on sale from eventos (or reservas' /metrics)."""
    now = datetime.fromtimestamp(clock(), UTC)
    eventos = next((e for e in targets.endpoints if e.service == "eventos"), None)
    with ThreadPoolExecutor(max_workers=len(targets.endpoints) + 1) as pool:
        looks = list(pool.map(lambda e: _look(e, targets), targets.endpoints))
    report = Report(now, looks)
    for look in looks:
        e = look.endpoint
        if look.health not in ("SERVING", "UP"):
            report.problems.append(f"{e.name}: {look.health}" + (f" ({look.detail})" if look.detail else ""))
        elif e.metrics is not None and look.samples is None:
            report.problems.append(f"{e.name}: /metrics at {e.metrics} did not answer ({look.metrics_error})")
    report.eventos = _tickets(report, targets, eventos)
    return report


def _tickets(report: Report, targets: Targets, eventos: Endpoint | None) -> dict[str, Any]:
    eventos_up = any(look.endpoint is eventos and look.health == "SERVING" for look in report.looks)
    if targets.token is not None and eventos is not None and eventos.grpc is not None and eventos_up:
        try:
            listed, more = events_on_sale(eventos.grpc, targets)
            return {"source": "eventos", "on_sale": listed, "more": more}
        except grpc.RpcError as error:
            code, details = error.code().name, error.details()  # type: ignore[attr-defined]
            report.problems.append(f"eventos: ListEventos failed: {code}: {details}")
    # Without eventos' answer: what reservas' replicas last heard from eventos, for the events they sold lately.
    left: dict[str, float] = {}
    for look in report.answered("reservas"):
        for s in look.samples or []:
            if s.name == "eventflow_reservas_tickets_left":
                left[s.labels["evento_id"]] = min(s.value, left.get(s.labels["evento_id"], s.value))
    note = targets.token_note if targets.token is None else "eventos did not answer"
    return {
        "source": "reservas-metrics" if left else None,
        "note": note,
        "on_sale": [{"id": k, "entradas_disponibles": int(v)} for k, v in sorted(left.items())],
        "more": False,
    }


# -- printing ------------------------------------------------------------------------------------------------


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def _table(rows: Sequence[Sequence[str]], paint: Callable[[int, int, str], str]) -> list[str]:
    """Aligned columns; `paint(row, column, padded)` may colour a cell (row 0 is the header)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(paint(r, c, cell.ljust(w)) for c, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
        for r, row in enumerate(rows)
    ]


def render_text(report: Report, color: bool = False) -> str:
    def style(code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if color else text

    services = report.services()
    rows = [("SERVICE", "ADDRESS", "HEALTH", "VERSION", "UPTIME", "METRICS")]
    rows += [
        (s["name"], s["address"] or "-", s["health"], s["version"] or "-", _duration(s["uptime_seconds"]),
         s["metrics"] or "none")
        for s in services
    ]  # fmt: skip

    def paint(r: int, c: int, cell: str) -> str:
        if r == 0:
            return style("1", cell)
        if c == 2:
            return style("32" if services[r - 1]["health"] in ("SERVING", "UP") else "31;1", cell)
        return cell

    lines = [f"EventFlow, {report.checked_at.strftime('%Y-%m-%d %H:%M:%S')} UTC", ""]
    lines += _table(rows, paint)
    sagas, projector = report.sagas(), report.projector()
    lines.append("")
    if sagas["open"] is None:
        lines.append("sagas      unknown (no reservas /metrics answered)")
    else:
        oldest = f", the oldest for {sagas['oldest_seconds']:.1f} s" if sagas["open"] else ""
        lines.append(f"sagas      {sagas['open']} open{oldest}")
    if not projector["reported_by"]:
        lines.append("projector  no projector reports (embedded in reservas, or --projector-metrics)")
    else:
        lag = "not caught up yet" if projector["lag_seconds"] is None else f"lag {projector['lag_seconds']:.2f} s"
        lines.append(
            f"projector  {lag}, {projector['events_behind']} events behind, {projector['dead_lettered']} dead-lettered"
            f" ({', '.join(projector['reported_by'])})"
        )
    lines.append("")
    lines += _events_lines(report.eventos, style)
    if report.problems:
        lines += ["", style("31;1", "problems:")] + [f"  {p}" for p in report.problems]
    return "\n".join(lines) + "\n"


def _events_lines(eventos: Mapping[str, Any], style: Callable[[str, str], str]) -> list[str]:
    on_sale = eventos.get("on_sale", [])
    if eventos.get("source") == "eventos":
        if not on_sale:
            return ["events on sale: none"]
        rows = [("EVENT ON SALE", "DATE (UTC)", "LEFT", "OF", "ID")]
        for e in on_sale:
            date = e["fecha"].replace("T", " ")[:16]
            rows.append((e["nombre"], date, str(e["entradas_disponibles"]), str(e["aforo_total"]), e["id"]))
        lines = _table(rows, lambda r, c, cell: style("1", cell) if r == 0 else cell)
        return lines + (["  ... and more (--events N shows more)"] if eventos.get("more") else [])
    if eventos.get("source") == "reservas-metrics":
        rows = [("EVENT (as reservas last heard)", "LEFT")]
        rows += [(e["id"], str(e["entradas_disponibles"])) for e in on_sale]
        note = f"  ({eventos['note']})" if eventos.get("note") else ""
        return [*_table(rows, lambda r, c, cell: style("1", cell) if r == 0 else cell), note]
    return [f"events on sale: unknown ({eventos.get('note') or 'eventos did not answer'})"]


def run(targets: Targets, as_json: bool, out: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout
    report = collect(targets)
    if as_json:
        out.write(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
    else:
        color = out.isatty() and not os.environ.get("NO_COLOR")
        out.write(render_text(report, color=color))
    return 0 if report.ok else 1


__all__ = ["DOWN", "Endpoint", "Report", "StatusError", "Targets", "collect", "discover", "render_text", "run"]
