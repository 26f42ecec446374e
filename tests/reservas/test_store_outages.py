"""A short outage of each store under load heals by itself (issue 9; the 30 s ones with 200 purchases are in
`make soak`, tests/soak/test_soak_outages.py, which explains the scenario: tests/soak/outages.py).

The whole stack runs as processes, as `eventflow up` runs it, with stores that keep their data; one cluster
serves both tests (each buys for its own events).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.bench.cluster import Cluster
from tests.soak.outages import RESERVAS_ENV, run_outage

PURCHASES = 40
DOWN = 3.0


@pytest.fixture(scope="module")
async def cluster() -> AsyncIterator[Cluster]:
    async with Cluster(reservas_env=RESERVAS_ENV, name="outage", persistent=True) as running:
        if any(running.store.external.values()):
            pytest.skip("the stores are servers of your own (MONGODB_URI / REDIS_URL): they are not ours to kill")
        yield running


@pytest.mark.parametrize("store", ["mongodb", "redis"])
async def test_a_short_store_outage_under_load_heals_by_itself(cluster: Cluster, store: str) -> None:
    await run_outage(cluster, store, purchases=PURCHASES, down=DOWN, settle_within=30)
