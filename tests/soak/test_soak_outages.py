"""Soak: each process of the stack killed with -9 under 200 purchases in flight, back after 30 s (issue 9).

MongoDB (SecantusDB), Redis, usuarios, eventos and reservas in turn, each on a stack of its own: the
scenario and what it checks are in tests/soak/outages.py. Within 60 s of the process being back every
reservation is settled, the invariants hold, no call got INTERNAL or UNKNOWN, every service is SERVING
without a restart, and a retry with the same idempotency key answers the settled outcome. The figures of
each run (answers, seconds to settle) are printed.
"""

from __future__ import annotations

import os

import pytest

from tests.bench.cluster import Cluster
from tests.soak.outages import RESERVAS_ENV, run_outage

PURCHASES = int(os.environ.get("EVENTFLOW_SOAK_OUTAGE_PURCHASES", "200"))
DOWN = float(os.environ.get("EVENTFLOW_SOAK_OUTAGE_SECONDS", "30"))
SETTLE_WITHIN = 60.0


@pytest.mark.soak
@pytest.mark.timeout(600)
@pytest.mark.parametrize("fault", ["mongodb", "redis", "usuarios", "eventos", "reservas"])
async def test_a_process_killed_under_load_heals_by_itself(fault: str) -> None:
    async with Cluster(reservas_env=RESERVAS_ENV, name=f"outage-{fault}", persistent=True) as cluster:
        if any(cluster.store.external.values()):
            pytest.skip("the stores are servers of your own (MONGODB_URI / REDIS_URL): they are not ours to kill")
        await run_outage(cluster, fault, purchases=PURCHASES, down=DOWN, settle_within=SETTLE_WITHIN)
