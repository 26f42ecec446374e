"""The projector and the rebuild as their own processes (`eventflow projector`, `eventflow projections
rebuild`): killed with SIGKILL mid-way and started again, the projector ends with the same read models
and counts nothing twice, and serves its lag on /metrics; the rebuild draws its progress and rebuilds the same
models."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pymongo.asynchronous.database import AsyncDatabase

from infra.metrics import version
from infra.procs import free_port
from reservas.projections.cli import ProjectorSettings, database_settings

from projections_support import (  # noqa: F401 - db and store are fixtures
    assert_models_match_event_store,
    burst,
    current_to,
    db,
    eventually,
    now,
    solicitar,
    store,
)
from reservas.domain import Reserva
from reservas.event_store import EventStore
from reservas.projections.checkpoint import SessionRegistry
from reservas.projections.read_models import VIEWS, ReadModels


EVENTFLOW = str(Path(sys.executable).parent / "eventflow")


def _start(
    command: str, mongo_uri: str, database: str, log: Path, metrics_port: int = 0
) -> subprocess.Popen[bytes]:
    """`eventflow <command>` configured like reservas (the projector's /metrics on `metrics_port`, 0: none)."""
    env = {**os.environ, "MONGODB_URI": mongo_uri, "RESERVAS_MONGODB_DATABASE": database,
           "PROJECTOR_METRICS_PORT": str(metrics_port)}  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(  # noqa: S603
            [EVENTFLOW, *command.split()], env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def _views(db: AsyncDatabase) -> int:
    return await db[VIEWS].count_documents({})


async def test_projector_process_killed_mid_way_and_restarted_counts_nothing_twice(
    mongo_uri: str, db: AsyncDatabase, store: EventStore, tmp_path: Path
) -> None:
    log = tmp_path / "projector.log"
    projector = _start("projector", mongo_uri, db.name, log)
    try:
        await current_to(db, now(), timeout=60)  # up and watching
        writer = asyncio.create_task(burst(store, 60, concurrency=8))
        await eventually(lambda: _at_least(db, 10), what="some views")
        projector.kill()  # SIGKILL: no cleanup, possibly mid-transaction
        projector.wait()
        await writer
        seen_before_restart = await _views(db)
        port = free_port()
        projector = _start("projector", mongo_uri, db.name, log, metrics_port=port)
        await current_to(db, now(), timeout=60)
        await assert_models_match_event_store(db)
        print(f"\nkilled after {seen_before_restart}/60 views; restarted and caught up")
        # Its own /metrics: its lag once caught up, and one more event applied moves its counter by one.
        series = await _scraped(port, lambda s: "eventflow_projector_lag_seconds" in s)
        assert series["eventflow_build_info"] == 1.0
        assert 0 <= series["eventflow_projector_lag_seconds"] < 30
        applied = series["eventflow_projector_events_applied_total"]
        await solicitar(store, usuario_id="u", evento_id="e")
        await _scraped(port, lambda s: s["eventflow_projector_events_applied_total"] == applied + 1)
        projector.send_signal(signal.SIGTERM)
        assert projector.wait(timeout=20) == 0, log.read_text()
    finally:
        if projector.poll() is None:
            projector.kill()
            projector.wait()


async def _scraped(port: int, wanted: Callable[[dict[str, float]], bool]) -> dict[str, float]:
    """The projector's unlabelled series and its build info, by name, from its /metrics, once `wanted` of them."""
    found: dict[str, float] = {}

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:  # noqa: S310
            return reply.read().decode()

    async def check() -> bool:
        try:
            text = await asyncio.to_thread(scrape)
        except OSError:
            return False
        found.clear()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if not sample.labels or sample.labels == {"service": "projector", "version": version()}:
                    found[sample.name] = sample.value
        return wanted(found)

    await eventually(check, what=f"the projector's /metrics on port {port}")
    return found


async def _at_least(db: AsyncDatabase, n: int) -> bool:
    return await _views(db) >= n


async def test_rebuild_command_draws_progress_and_rebuilds_the_same_models(
    mongo_uri: str, db: AsyncDatabase, store: EventStore, tmp_path: Path
) -> None:
    await burst(store, 20)
    log = tmp_path / "rebuild.log"
    first = _start("projections rebuild", mongo_uri, db.name, log)
    assert await asyncio.to_thread(first.wait, 60) == 0, log.read_text()
    await assert_models_match_event_store(db)
    before = await ReadModels(db).snapshot()
    await db[VIEWS].update_many({}, {"$set": {"estado": "FALLIDA"}})  # whatever state they are in...
    again = _start("projections rebuild", mongo_uri, db.name, log)
    assert await asyncio.to_thread(again.wait, 60) == 0, log.read_text()
    assert await ReadModels(db).snapshot() == before  # ...a rebuild drops and rebuilds them
    output = log.read_text()
    assert f"[{'#' * 30}] 20/20 streams" in output
    assert "from 20 streams in" in output
    host = mongo_uri.split("//", 1)[1].split("/", 1)[0]
    assert f"rebuilding the read models of database {db.name} at {host}" in output  # it says what it drops


async def test_a_dead_projectors_open_transaction_is_aborted_by_its_successor(db: AsyncDatabase) -> None:
    """A projector killed mid-transaction leaves it open, holding what it wrote (60 s on mongod); the
    next projector on the same host aborts it at once instead of conflicting with it until then."""
    gone = subprocess.Popen(["true"])  # noqa: S607 - a pid that no longer runs
    gone.wait()
    orphan = db.client.start_session()
    await orphan.start_transaction()
    await db[VIEWS].insert_one({"_id": "held", "version": 1}, session=orphan)
    await db["proyecciones_checkpoint"].insert_one(
        {"_id": "session:ghost", "kind": "session", "host": socket.gethostname(), "pid": gone.pid,
         "lsid": orphan.session_id, "at": now()}
    )  # fmt: skip
    assert await SessionRegistry(db, "successor").reap() == 1
    await ReadModels(db).apply([await _reserva_with_id(db, "held")])  # no conflict with the aborted writes
    assert (await db[VIEWS].find_one({"_id": "held"}))["version"] == 1  # type: ignore[index]
    assert await db["proyecciones_checkpoint"].count_documents({"kind": "session"}) == 0


async def _reserva_with_id(db: AsyncDatabase, reserva_id: str) -> Reserva:
    store = EventStore(db)
    await solicitar(store, usuario_id="u", evento_id="e", reserva_id=reserva_id)
    reserva = await store.get(reserva_id)
    assert reserva is not None
    return reserva


def test_the_commands_find_eventflow_ups_store_by_its_port_not_whatever_answers_on_27017() -> None:
    """Issue 11: with the stack on another port, a rebuild dropped the read models of the MongoDB on 27017."""
    assert database_settings({"EVENTFLOW_MONGODB_PORT": "28017"})[0] == "mongodb://127.0.0.1:28017/?directConnection=true"
    assert database_settings({"EVENTFLOW_MONGODB_PORT": "28017", "MONGODB_URI": "mongodb://db:1"})[0] == "mongodb://db:1"
    assert database_settings({"RESERVAS_MONGODB_DATABASE": "mine"})[1] == "mine"


def test_the_projector_serves_metrics_on_its_own_port() -> None:
    assert ProjectorSettings.from_env({}).metrics_port == 9450  # below the services' (and their replicas')
    settings = ProjectorSettings.from_env({"PROJECTOR_METRICS_PORT": "0", "GRPC_BIND_HOST": "0.0.0.0"})
    assert (settings.metrics_port, settings.bind_host) == (0, "0.0.0.0")  # noqa: S104
    with pytest.raises(ValueError, match="PROJECTOR_METRICS_PORT"):
        ProjectorSettings.from_env({"PROJECTOR_METRICS_PORT": "lots"})
