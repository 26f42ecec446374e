"""Soak fixtures: the reservas suite's full-stack `world` (tests/reservas/conftest.py), reused as is.

`make soak` collects only tests/soak, so tests/reservas/conftest.py is not loaded as a conftest:
its fixtures are imported from it here instead (tests/soak/support.py explains the one subtlety).
Every soak test is marked `soak` (deselected by `make test` through pytest's addopts) and also
needs EVENTFLOW_SOAK=1, which `make soak` sets.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.soak.support import Reservas
from tests.reservas.conftest import World, world  # noqa: F401 - `world` is a fixture, used by the soak tests

SOAK = os.environ.get("EVENTFLOW_SOAK") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="soak tests run with EVENTFLOW_SOAK=1 (make soak)")
    for item in items:
        if item.get_closest_marker("soak") and not SOAK:
            item.add_marker(skip)


@pytest.fixture
def reservas_process(world: World, tmp_path: Path) -> Iterator[Reservas]:
    """One reservas subprocess wired to the world (started by the test); killed after the test."""
    started = time.monotonic()
    reservas = Reservas(world, tmp_path, EVENTFLOW_HOLD_TTL_SECONDS="8", EVENTFLOW_PAYMENT_SLOW_SECONDS="0.5")
    yield reservas
    reservas.kill()
    print(f"\nreservas started {reservas.starts} times in {time.monotonic() - started:.0f}s; logs in {tmp_path}")
