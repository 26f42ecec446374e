"""The projector's Prometheus series, read from a running `Projector` at each scrape (no bookkeeping of its own).

- `eventflow_projector_events_applied_total`: events of the event store applied to the read models;
- `eventflow_projector_dead_letters_total`: streams set aside as dead letters (`Projector.dead_lettered`);
- `eventflow_projector_lag_seconds`: now minus the instant the read models are known current to (the
  checkpoint's `hasta`); absent until the projector has caught up once;
- `eventflow_projector_events_behind`: changes read from the store and not applied yet.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from reservas.projections.projector import Projector


class ProjectorCollector(Collector):
    def __init__(self, projector: Projector) -> None:
        self.projector = projector

    def collect(self) -> Iterator[Metric]:
        p = self.projector
        yield CounterMetricFamily(
            "eventflow_projector_events_applied", "Events applied to the read models.", value=p.changes_seen
        )
        yield CounterMetricFamily(
            "eventflow_projector_dead_letters", "Streams set aside as dead letters.", value=p.dead_lettered
        )
        lag = GaugeMetricFamily("eventflow_projector_lag_seconds", "Seconds the read models are behind the store.")
        if p.current_to is not None:
            lag.add_metric([], max(0.0, (datetime.now(UTC) - p.current_to).total_seconds()))
        yield lag
        yield GaugeMetricFamily(
            "eventflow_projector_events_behind", "Changes read from the store and not applied yet.", value=p.behind
        )


__all__ = ["ProjectorCollector"]
