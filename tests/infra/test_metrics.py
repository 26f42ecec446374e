"""infra.metrics: the metrics port each Config reads, one registry per app, and a busy port that is not fatal."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from infra.metrics import DEFAULT_PORTS, Metrics, metrics_port
from infra.procs import free_port


@pytest.mark.parametrize("service", sorted(DEFAULT_PORTS))
def test_each_config_reads_its_metrics_port(service: str) -> None:
    config_class = __import__(f"{service}.config", fromlist=["Config"]).Config
    from callers import KEY_ENV  # noqa: PLC0415 - a Config from the environment needs the session's keys

    assert config_class().metrics_port == 0  # built in code: no endpoint unless asked
    assert config_class.from_env(dict(KEY_ENV)).metrics_port == DEFAULT_PORTS[service]
    variable = f"{service.upper()}_METRICS_PORT"
    assert config_class.from_env({**KEY_ENV, variable: "0"}).metrics_port == 0
    assert config_class.from_env({**KEY_ENV, variable: "9999"}).metrics_port == 9999
    with pytest.raises(ValueError, match=variable):
        metrics_port({variable: "seventy"}, service)


def test_two_apps_in_one_process_have_their_own_registries_and_endpoints() -> None:
    first, second = (Metrics(name, port=free_port()) for name in ("usuarios", "eventos"))
    first.start()
    second.start()
    try:
        first.grpc.started.labels("unary", "s", "M").inc()
        pages = [urllib.request.urlopen(f"http://{m.address}/metrics", timeout=5).read().decode() for m in (first, second)]  # noqa: S310
        assert 'grpc_server_started_total{grpc_method="M",grpc_service="s",grpc_type="unary"} 1.0' in pages[0]
        assert "grpc_method=\"M\"" not in pages[1]
        assert all("process_resident_memory_bytes" in page for page in pages)
    finally:
        first.stop()
        second.stop()
    assert first.address is None


def test_a_busy_port_is_logged_and_the_service_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics = Metrics("reservas", port=taken.getsockname()[1])
        metrics.start()
        assert metrics.address is None
        assert "cannot serve /metrics" in caplog.text
        metrics.stop()


def test_eventflow_up_writes_a_scrape_config_for_every_process_replicas_included(tmp_path) -> None:  # noqa: ANN001
    import yaml  # noqa: PLC0415

    from infra.stack import Options, Stack  # noqa: PLC0415

    stack = Stack(Options(data_dir=tmp_path, reservas_replicas=2), env={"EVENTOS_METRICS_PORT": "0"})
    stack.write_prometheus_config()
    config = yaml.safe_load((tmp_path / "prometheus.yml").read_text(encoding="utf-8"))
    targets = {job["job_name"]: job["static_configs"] for job in config["scrape_configs"]}
    assert targets == {
        "usuarios": [{"targets": ["127.0.0.1:9451"]}],
        "reservas": [{"targets": ["127.0.0.1:9453"]}, {"targets": ["127.0.0.1:9454"]}],
    }
    assert stack.service_env("reservas")["RESERVAS_METRICS_PORT"] == "9453"


def test_the_grafana_dashboard_reads_only_series_the_services_export() -> None:
    import json  # noqa: PLC0415
    import re  # noqa: PLC0415
    from datetime import UTC, datetime  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415
    from types import SimpleNamespace  # noqa: PLC0415

    from reservas.metrics import ReservasMetrics  # noqa: PLC0415
    from reservas.projections.metrics import ProjectorCollector  # noqa: PLC0415

    metrics = Metrics("reservas")
    ReservasMetrics(metrics.registry)
    projector = SimpleNamespace(changes_seen=1, dead_lettered=0, current_to=datetime.now(UTC), behind=0)
    metrics.registry.register(ProjectorCollector(projector))  # type: ignore[arg-type]
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    exported = {
        family.name + suffix for family in metrics.registry.collect() for suffix in suffixes.get(family.type, ("",))
    }

    dashboard = json.loads((Path(__file__).parents[2] / "deploy/grafana/eventflow.json").read_text(encoding="utf-8"))
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\b((?:grpc_server|eventflow|process)_[a-z_]+)\b", expr)}
    assert len(dashboard["panels"]) >= 10 and all(panel["gridPos"] for panel in dashboard["panels"])
    assert used - exported == set(), "the dashboard reads series nobody exports"
    for wanted in ("grpc_server_handled_total", "grpc_server_handling_seconds_bucket",
                   "eventflow_reservas_purchases_total", "eventflow_projector_lag_seconds"):  # fmt: skip
        assert wanted in used
