"""The projector never stalls (issue 9): a stream the read models cannot take is retried, set aside as a dead
letter, logged once and skipped; the good streams around it are projected and `actualizado_hasta` moves on.
`eventflow projections dead-letters` lists them, `replay-dead-letters` applies them after a fix, a rebuild
reports them, and a MongoDB outage sets nothing aside.

Real SecantusDB. Two kinds of poison, as the issue saw them and as bad data would make them: a second purchase
of an event priced at int64's maximum (the statistics' `$inc recaudado` overflows), and an event written
straight into the event store with a `monto` of the wrong type (the aggregate cannot replay it).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bson.errors import InvalidDocument
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import AutoReconnect, BulkWriteError, NetworkTimeout, OperationFailure, ServerSelectionTimeoutError

from infra import procs
from projections_support import (  # noqa: F401 - db and store are fixtures
    queries_of,
    PRECIO,
    assert_models_match_event_store,
    cancelar,
    confirmar,
    current_to,
    db,
    eventually,
    now,
    purchase,
    running,
    solicitar,
    store,
)
from reservas.domain import Estado, Event, Reserva, StoreUnavailable, Tipo
from reservas.event_store import EventStore, to_document
from reservas.projections.checkpoint import Checkpoints
from reservas.projections.cli import list_dead_letters, rebuild_read_models, replay_dead_letters
from reservas.projections.dead_letters import DeadLetter, DeadLetters
from reservas.projections.poison import is_transient
from reservas.projections.read_models import VIEWS, ReadModels
from reservas.projections.rebuild import rebuild

INT64_MAX = 2**63 - 1
EVENTFLOW = str(Path(sys.executable).parent / "eventflow")


@dataclass(frozen=True)
class Scenario:
    """Good purchases of e1 around two poison streams: `overflow` (the second purchase of `caro`, priced at
    int64's maximum) and `unreadable` (a DatosValidados whose monto is not a number)."""

    good1: Reserva
    caro: Reserva
    overflow: Reserva
    unreadable: Reserva
    good2: Reserva


async def write_scenario(store: EventStore) -> Scenario:
    good1 = await purchase(store, "confirmada", usuario_id="u1", evento_id="e1", cantidad=2)
    # Which of two purchases overflows the sum is the one applied second: a rebuild goes by reserva_id.
    caro = await solicitar(store, usuario_id="u1", evento_id="caro", reserva_id="caro-1")
    await confirmar(store, caro, together=True, precio=INT64_MAX)  # recaudado of `caro`: int64's maximum
    overflow = await solicitar(store, usuario_id="u2", evento_id="caro", reserva_id="caro-2")
    await confirmar(store, overflow, together=True)  # its charge pushes recaudado past it: the $inc cannot be applied
    unreadable = await solicitar(store, usuario_id="u2", evento_id="e1")
    await append_raw(store, unreadable.id, 2, Tipo.DATOS_VALIDADOS, {"monto": "mucho", "moneda": "EUR"})
    good2 = await purchase(store, "confirmada", usuario_id="u3", evento_id="e1", cantidad=1)
    return Scenario(good1, caro, overflow, unreadable, good2)


async def append_raw(store: EventStore, reserva_id: str, version: int, tipo: Tipo, datos: dict[str, Any]) -> None:
    """An event written straight into the event store (no aggregate checks it), as bad data would be."""
    await store.collection.insert_one(to_document(Event(reserva_id, version, tipo, datos, now())))


async def view(db: AsyncDatabase, reserva_id: str) -> dict[str, Any] | None:
    return await db[VIEWS].find_one({"_id": reserva_id})


async def assert_good_ones_projected_and_poison_held_before_it(db: AsyncDatabase, s: Scenario) -> None:
    for good in (s.good1, s.caro, s.good2):
        doc = await view(db, good.id)
        assert doc is not None and doc["version"] == good.version and doc["estado"] == "CONFIRMADA", good.id
    # The poison streams' views hold the state just before their poison event.
    held = await view(db, s.overflow.id)
    assert held is not None and (held["version"], held["estado"], held["pagos"]) == (5, "PENDIENTE", [])
    held = await view(db, s.unreadable.id)
    assert held is not None and (held["version"], held["estado"]) == (1, "PENDIENTE")
    queries = queries_of(db)
    e1 = await queries.estadisticas_evento("e1")
    assert (e1.solicitadas, e1.confirmadas, e1.entradas_vendidas, e1.recaudado) == (3, 2, 3, 3 * PRECIO)
    caro = await queries.estadisticas_evento("caro")
    assert (caro.solicitadas, caro.confirmadas, caro.entradas_vendidas, caro.recaudado) == (2, 1, 1, INT64_MAX)


def assert_listed(letters: list[DeadLetter], s: Scenario) -> None:
    by_id = {letter.reserva_id: letter for letter in letters}
    assert set(by_id) == {s.overflow.id, s.unreadable.id}
    overflow = by_id[s.overflow.id]
    assert (overflow.version, overflow.tipo) == (6, "PagoProcesado")
    assert overflow.error_type in ("BulkWriteError", "OverflowError")
    assert "$inc" in overflow.error_message or "8-byte" in overflow.error_message
    unreadable = by_id[s.unreadable.id]
    assert (unreadable.version, unreadable.tipo, unreadable.error_type) == (2, "DatosValidados", "ValueError")
    assert "mucho" in unreadable.error_message
    for letter in letters:
        assert letter.attempts >= 3 and letter.first_failure <= letter.last_failure


def poison_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.reserva_id  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "reservas.projections.poison" and r.levelno == level
    ]


async def test_poison_streams_are_set_aside_and_the_good_ones_around_them_projected(
    mongo_uri: str, db: AsyncDatabase, store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running(db) as projector:
        await current_to(db, now())  # following the change stream
        s = await write_scenario(store)
        written = now()
        await current_to(db, written)  # actualizado_hasta moves past the poison
        await assert_good_ones_projected_and_poison_held_before_it(db, s)
        assert (await queries_of(db).estadisticas_evento("e1")).actualizado_hasta >= written  # type: ignore[operator]
        listed = await queries_of(db).list_reservas(evento_id="e1")
        assert [r.id for r in listed.reservas] == [s.good2.id, s.unreadable.id, s.good1.id]
        assert_listed(await DeadLetters(db).list(), s)
        assert sorted(poison_lines(caplog, logging.ERROR)) == sorted([s.overflow.id, s.unreadable.id])  # once each
        assert projector.dead_lettered == len(poison_lines(caplog, logging.ERROR) + poison_lines(caplog, logging.WARNING))

        # A later event of a stream aside: tried again, still failing; its dead letter is updated, no new ERROR.
        before = {d.reserva_id: d for d in await DeadLetters(db).list()}
        await append_raw(store, s.unreadable.id, 3, Tipo.PASO_INICIADO, {"paso": "ValidadorInventario"})
        await current_to(db, now())
        after = {d.reserva_id: d for d in await DeadLetters(db).list()}
        assert after[s.unreadable.id].attempts > before[s.unreadable.id].attempts
        assert (after[s.unreadable.id].version, after[s.unreadable.id].first_failure) == (
            2, before[s.unreadable.id].first_failure,
        )  # fmt: skip
        assert after[s.overflow.id] == before[s.overflow.id]
        assert sorted(poison_lines(caplog, logging.ERROR)) == sorted([s.overflow.id, s.unreadable.id])
        assert poison_lines(caplog, logging.WARNING)[-1] == s.unreadable.id  # WARNING, when it fails again
        # The stream after the poison is not projected "without it": the view still holds version 1.
        assert (await view(db, s.unreadable.id))["version"] == 1  # type: ignore[index]

    # `eventflow projections dead-letters`: a table, and JSON with the errors whole.
    out = io.StringIO()
    assert await list_dead_letters(mongo_uri, db.name, out=out) == 0
    table = out.getvalue().splitlines()
    assert table[0].split() == ["RESERVA", "VERSION", "TIPO", "ATTEMPTS", "FIRST", "FAILURE", "LAST", "FAILURE", "ERROR"]
    rows = {line.split()[0]: line.split() for line in table[1:3]}
    assert rows[s.overflow.id][1:3] == ["6", "PagoProcesado"]
    assert rows[s.unreadable.id][1:3] == ["2", "DatosValidados"]
    assert "replay-dead-letters" in table[-1]
    out = io.StringIO()
    assert await list_dead_letters(mongo_uri, db.name, as_json=True, out=out) == 0
    assert {(d["reserva_id"], d["version"], d["tipo"]) for d in json.loads(out.getvalue())} == {
        (s.overflow.id, 6, "PagoProcesado"), (s.unreadable.id, 2, "DatosValidados"),
    }  # fmt: skip


async def test_an_event_with_no_reserva_id_does_not_stop_the_projector(db: AsyncDatabase, store: EventStore) -> None:
    async with running(db):
        await current_to(db, now())
        first = await purchase(store, "confirmada", usuario_id="u", evento_id="e", cantidad=1)
        await store.collection.insert_one({"version": 1, "tipo": "ReservaSolicitada", "datos": {}, "ocurrido": now()})
        second = await purchase(store, "fallida", usuario_id="u", evento_id="e", cantidad=1)
        await current_to(db, now())
    for reserva in (first, second):
        assert (await view(db, reserva.id))["version"] == reserva.version  # type: ignore[index]


async def test_rebuild_sets_poison_aside_reports_it_and_ends_where_the_projector_did(
    mongo_uri: str, db: AsyncDatabase, store: EventStore, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running(db):
        s = await write_scenario(store)
        await current_to(db, now())
    incremental = await ReadModels(db).snapshot()
    result = await rebuild(db, owner="test", expected=await Checkpoints(db).load())
    assert (result.streams, result.dead_letters) == (5, 2)
    assert await ReadModels(db).snapshot() == incremental  # the same views, held at the same versions
    assert_listed(await DeadLetters(db).list(), s)
    # The command says how many were set aside and where to look.
    assert await rebuild_read_models(mongo_uri, db.name) == 0
    err = capsys.readouterr().err
    assert "from 5 streams" in err
    assert "2 of them could not be applied" in err and "eventflow projections dead-letters" in err


async def test_replay_after_a_fix_removes_what_applies_and_keeps_what_still_fails(
    mongo_uri: str, db: AsyncDatabase, store: EventStore, tmp_path: Path
) -> None:
    s = await write_scenario(store)
    await rebuild(db, owner="test", expected=None)
    before = {d.reserva_id: d for d in await DeadLetters(db).list()}
    assert set(before) == {s.overflow.id, s.unreadable.id}
    # As a subprocess: the command, configured like reservas.
    listed = _eventflow(["projections", "dead-letters", "--json"], mongo_uri, db.name)
    assert listed.returncode == 0, listed.stderr
    assert {d["reserva_id"] for d in json.loads(listed.stdout)} == {s.overflow.id, s.unreadable.id}

    # Fix the data of one (the bad monto), replay both: that one applies, the other still fails.
    await store.collection.update_one({"reserva_id": s.unreadable.id, "version": 2}, {"$set": {"datos.monto": PRECIO}})
    out = io.StringIO()
    assert await replay_dead_letters(mongo_uri, db.name, out=out) == 1
    assert "1 apply now and were removed, 1 still fail" in out.getvalue()
    after = {d.reserva_id: d for d in await DeadLetters(db).list()}
    assert set(after) == {s.overflow.id}
    assert after[s.overflow.id].attempts == before[s.overflow.id].attempts + 1
    assert after[s.overflow.id].last_failure > before[s.overflow.id].last_failure
    unreadable = await view(db, s.unreadable.id)
    assert unreadable is not None and (unreadable["version"], unreadable["monto"]) == (2, PRECIO)

    # Make the other applicable (the first purchase of `caro` is refunded), replay it through the command.
    await cancelar(store, s.caro)
    await ReadModels(db).apply([await store.get(s.caro.id)])  # type: ignore[list-item]
    replayed = _eventflow(["projections", "replay-dead-letters", s.overflow.id], mongo_uri, db.name)
    assert replayed.returncode == 0, replayed.stderr
    assert "1 apply now and were removed, 0 still fail" in replayed.stdout
    assert await DeadLetters(db).count() == 0
    assert (await view(db, s.overflow.id))["estado"] == Estado.CONFIRMADA  # type: ignore[index]
    await assert_models_match_event_store(db)
    nothing = _eventflow(["projections", "dead-letters"], mongo_uri, db.name)
    assert nothing.returncode == 0 and "no dead letters" in nothing.stdout


def _eventflow(args: list[str], mongo_uri: str, database: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MONGODB_URI": mongo_uri, "RESERVAS_MONGODB_DATABASE": database}
    return subprocess.run([EVENTFLOW, *args], env=env, capture_output=True, text=True, timeout=60)  # noqa: S603


async def test_a_mongodb_outage_sets_nothing_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A SecantusDB of this test's own, stopped while the projector has a batch in hand and started again on the
    same port and data. Stopped with SIGTERM: SecantusDB may lose its last seconds of writes to a SIGKILL, and
    the purchase written before the outage must still be there to be projected after it. A client that gives up
    on server selection after 1 s (not 5) makes the projector's reads and writes fail during a short outage."""
    port, storage, log_path = procs.free_port(), tmp_path / "mongodb", tmp_path / "mongodb.log"
    server = procs.mongo_process(port, storage, log_path).start()
    client = AsyncMongoClient(
        f"mongodb://127.0.0.1:{port}/?directConnection=true",
        tz_aware=True, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000, maxPoolSize=4,
    )  # fmt: skip
    try:
        await asyncio.to_thread(server.wait_listening, 60)
        database = client["reservas"]
        store = EventStore(database)
        await store.ensure_indexes()
        # A long batch window: the purchase is appended, the projector hears of it, and the store goes away
        # before the projector reads the streams and writes the models.
        async with running(database, batch_window=1.0) as projector:
            await current_to(database, now(), timeout=60)
            before = await purchase(store, "confirmada", usuario_id="u", evento_id="e", cantidad=1)
            await asyncio.to_thread(server.stop)
            await eventually(lambda: _logged(caplog, "database error"), timeout=30, what="the projector failing")
            server = procs.mongo_process(port, storage, log_path).start()
            await asyncio.to_thread(server.wait_listening, 60)
            after = await _purchase_when_back(store)
            await eventually(lambda: _at(database, before), timeout=60, what="the purchase before the outage")
            await eventually(lambda: _at(database, after), timeout=60, what="the purchase after it")
            await current_to(database, now(), timeout=60)
            assert projector.dead_lettered == 0
        assert await DeadLetters(database).count() == 0
        assert poison_lines(caplog, logging.ERROR) == [] and poison_lines(caplog, logging.WARNING) == []
        await assert_models_match_event_store(database)
    finally:
        await client.close()
        server.stop()


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return text in caplog.text


async def test_the_stores_errors_while_applying_are_retried_not_set_aside(
    db: AsyncDatabase, store: EventStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The same where poison is told apart: the writes of the read models fail as a store going away fails them
    (connection lost, a timeout, a transaction to retry) more times than a poison event is tried."""
    apply = ReadModels.apply
    failures = [
        AutoReconnect("connection closed"),
        NetworkTimeout("timed out"),
        OperationFailure("aborted", code=251, details={"errorLabels": ["TransientTransactionError"]}),
    ] * 2

    async def failing(self: ReadModels, reservas: Any) -> int:
        if failures:
            raise failures.pop(0)
        return await apply(self, reservas)

    async with running(db, retry_delay=0.05) as projector:
        await current_to(db, now())
        monkeypatch.setattr(ReadModels, "apply", failing)
        reservas = [await purchase(store, "confirmada", usuario_id="u", evento_id="e", cantidad=1) for _ in range(3)]
        await current_to(db, now())
        assert failures == [] and projector.dead_lettered == 0
    assert await DeadLetters(db).count() == 0
    assert poison_lines(caplog, logging.ERROR) == []
    for reserva in reservas:
        assert await _at(db, reserva)


async def _purchase_when_back(store: EventStore) -> Reserva:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        try:
            return await purchase(store, "confirmada", usuario_id="u", evento_id="e", cantidad=2)
        except StoreUnavailable:  # the event store's own signal while MongoDB is away
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _at(db: AsyncDatabase, reserva: Reserva) -> bool:
    doc = await view(db, reserva.id)
    return doc is not None and doc["version"] == reserva.version


def test_the_stores_trouble_is_transient_and_the_datas_is_poison() -> None:
    transient: list[BaseException] = [
        AutoReconnect("connection refused"),
        NetworkTimeout("timed out"),
        ServerSelectionTimeoutError("no server"),
        ConnectionRefusedError(),
        OperationFailure("WriteConflict", code=112),
        OperationFailure("not primary", code=10107),
        OperationFailure("aborted", code=251, details={"errorLabels": ["TransientTransactionError"]}),
        BulkWriteError({"writeErrors": [], "writeConcernErrors": [{"code": 64}]}),
    ]
    poison: list[BaseException] = [
        OperationFailure("Failed to apply $inc", code=2),
        BulkWriteError({"writeErrors": [{"index": 0, "code": 2, "errmsg": "Failed to apply $inc"}]}),
        OverflowError("MongoDB can only handle up to 8-byte ints"),
        InvalidDocument("cannot encode object"),
        ValueError("invalid literal for int()"),
        KeyError("monto"),
    ]
    assert [e for e in transient if not is_transient(e)] == []
    assert [e for e in poison if is_transient(e)] == []
