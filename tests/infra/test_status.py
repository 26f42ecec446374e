"""infra.status (`eventflow status`): where it looks, and what it makes of a stack that is partly there.

The whole command against a running `eventflow up` is tested in tests/e2e/test_e2e_stack.py; these check the
discovery rules and the report from real /metrics endpoints with no gRPC server behind them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.keys import ensure_keys
from infra.metrics import Metrics, version
from infra.procs import free_port
from infra.status import DOWN, StatusError, collect, discover, render_text
from reservas.metrics import ReservasMetrics


def test_by_default_it_finds_the_stack_as_eventflow_up_lays_it_out(tmp_path: Path) -> None:
    env = {"EVENTOS_PORT": "61052", "RESERVAS_METRICS_PORT": "19453", "USUARIOS_METRICS_PORT": "0"}
    targets = discover(env, data_dir=tmp_path, replicas=2)
    found = {e.name: (e.grpc, e.metrics) for e in targets.endpoints}
    assert found == {
        "usuarios": ("127.0.0.1:50051", None),  # 0: it serves no /metrics
        "eventos": ("127.0.0.1:61052", "127.0.0.1:9452"),
        "reservas": ("127.0.0.1:50053", "127.0.0.1:19453"),
        "reservas-2": ("127.0.0.1:50054", "127.0.0.1:19454"),
    }
    assert targets.token is None and "issuer.key" in targets.token_note  # no keys made yet: no token
    ensure_keys(tmp_path / "keys")
    assert discover(env, data_dir=tmp_path).token  # minted from <data dir>/keys, as `eventflow token` does


def test_given_addresses_take_their_metrics_from_the_same_host_unless_told(tmp_path: Path) -> None:
    targets = discover(
        {}, data_dir=tmp_path,
        given={"reservas": ["10.0.0.7:50053", "10.0.0.8:50053"], "eventos": ["eventos.svc:7000"]},
        given_metrics={"reservas": ["10.0.0.7:9999"]}, projector_metrics=["10.0.0.9:9450"],
    )  # fmt: skip
    found = {e.name: (e.service, e.grpc, e.metrics) for e in targets.endpoints}
    assert found["reservas"] == ("reservas", "10.0.0.7:50053", "10.0.0.7:9999")
    assert found["reservas-2"] == ("reservas", "10.0.0.8:50053", "10.0.0.8:9453")
    assert found["eventos"] == ("eventos", "eventos.svc:7000", "eventos.svc:9452")
    assert found["usuarios"] == ("usuarios", "127.0.0.1:50051", "127.0.0.1:9451")  # not given: the local stack's
    assert found["projector"] == ("projector", None, "10.0.0.9:9450")


@pytest.mark.parametrize("address", ["localhost", "host:port", ":50051", "host:70000"])
def test_an_address_that_is_not_host_port_is_refused_by_name(tmp_path: Path, address: str) -> None:
    with pytest.raises(StatusError, match="--eventos must be HOST:PORT"):
        discover({}, data_dir=tmp_path, given={"eventos": [address]})


def test_a_stack_half_down_is_reported_with_what_its_metrics_still_say(tmp_path: Path) -> None:
    """reservas' gRPC port is dead but its /metrics answers; nothing else answers at all: down, exit non-zero,
    and the sagas and the tickets reservas last heard of are still shown."""
    metrics = Metrics("reservas", port=free_port())
    reservas = ReservasMetrics(metrics.registry)
    reservas.track_open_sagas(lambda: 2, lambda: 4.25)
    reservas.tickets_left.note("evento-1", 17, version=3)
    metrics.start()
    try:
        nowhere = f"127.0.0.1:{free_port()}"
        targets = discover(
            {}, data_dir=tmp_path, timeout=2,
            given={"usuarios": [nowhere], "eventos": [nowhere], "reservas": [nowhere]},
            given_metrics={"usuarios": [nowhere], "eventos": [nowhere], "reservas": [metrics.address or ""]},
        )  # fmt: skip
        report = collect(targets)
    finally:
        metrics.stop()
    assert not report.ok
    document = report.to_json()
    services = {s["name"]: s for s in document["services"]}
    assert {s["health"] for s in services.values()} == {DOWN}
    assert services["reservas"]["version"] == version() and services["reservas"]["uptime_seconds"] >= 0
    assert services["usuarios"]["version"] is None
    assert document["sagas"] == {"open": 2, "oldest_seconds": 4.2}  # noqa: PLR2004 - rounded to 0.1 s
    assert document["projector"]["reported_by"] == []  # this reservas runs no projector
    assert document["eventos"]["source"] == "reservas-metrics"
    assert document["eventos"]["on_sale"] == [{"id": "evento-1", "entradas_disponibles": 17}]
    assert sorted(p.split(":")[0] for p in document["problems"]) == ["eventos", "reservas", "usuarios"]

    plain, coloured = render_text(report), render_text(report, color=True)
    assert "sagas      2 open, the oldest for 4.2 s" in plain and "evento-1" in plain and "problems:" in plain
    assert "\033[" not in plain and "\033[31;1m" in coloured
