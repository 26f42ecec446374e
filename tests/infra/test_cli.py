"""One configuration for every `eventflow` command: each finds the stack as `eventflow up` does (its variables,
else the `eventflow up` running on the data directory, else its defaults); a rebuild names the database it is
about to drop and refuses one without EventFlow data; every error is one line and a non-zero exit code."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure, ServerSelectionTimeoutError

import reservas.projections.cli as projections_cli
from infra import cli
from infra.stack import STATE_FILE, locate
from reservas.event_store import COLLECTION as EVENTS


def _record(data_dir: Path, pid: int, mongodb_uri: str = "mongodb://127.0.0.1:28999/?directConnection=true") -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    services = {"usuarios": "127.0.0.1:6101", "eventos": "127.0.0.1:6102", "reservas": "127.0.0.1:6103"}
    record = {"pid": pid, "mongodb_uri": mongodb_uri, "redis_url": "redis://127.0.0.1:6999/0", "services": services}
    (data_dir / STATE_FILE).write_text(json.dumps(record), encoding="utf-8")


def test_locate_prefers_the_variables_then_the_running_stack_then_the_defaults(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert locate({}, data).mongodb_uri == "mongodb://127.0.0.1:27017/?directConnection=true"
    _record(data, os.getpid())  # a stack running on this data directory (this process stands in for it)
    found = locate({}, data)
    assert found.mongodb_uri == "mongodb://127.0.0.1:28999/?directConnection=true"
    assert found.services["reservas"] == "127.0.0.1:6103" and str(data) in found.found
    moved = locate({"EVENTFLOW_MONGODB_PORT": "28017", "RESERVAS_PORT": "7003"}, data)
    assert moved.mongodb_uri == "mongodb://127.0.0.1:28017/?directConnection=true"
    assert moved.services["reservas"] == "127.0.0.1:7003" and moved.redis_url == "redis://127.0.0.1:6999/0"
    assert locate({"MONGODB_URI": "mongodb://db:1", "EVENTFLOW_MONGODB_PORT": "28017"}, data).mongodb_uri == "mongodb://db:1"
    gone = subprocess.Popen(["true"])  # noqa: S607 - a pid that no longer runs: its record is stale
    gone.wait()
    _record(data, gone.pid)
    assert locate({}, data).mongodb_uri == "mongodb://127.0.0.1:27017/?directConnection=true"


def test_rebuild_names_the_database_and_refuses_one_without_eventflow_data(
    mongo_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found through the running stack's record in --data-dir: the database there holds no reservation events
    (another application's), so nothing is dropped and the one line says which database and where."""
    database = f"not_eventflow_{os.getpid()}"
    for var in ("MONGODB_URI", "EVENTFLOW_MONGODB_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RESERVAS_MONGODB_DATABASE", database)
    _record(tmp_path / "data", os.getpid(), mongo_uri)

    async def other_application() -> list[str]:
        client: AsyncMongoClient = AsyncMongoClient(mongo_uri)
        try:
            await client[database]["reservas_vista"].insert_one({"_id": "theirs"})  # a collection of the same name
            return sorted(await client[database].list_collection_names())
        finally:
            await client.close()

    before = asyncio.run(other_application())
    code = cli.main(["projections", "rebuild", "--data-dir", str(tmp_path / "data")])
    err = capsys.readouterr().err
    host = mongo_uri.split("//", 1)[1].split("/", 1)[0]
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert f"refusing to rebuild: database {database} at {host} holds no reservation events ({EVENTS}" in err

    async def after() -> list[str]:
        client: AsyncMongoClient = AsyncMongoClient(mongo_uri)
        try:
            names = sorted(await client[database].list_collection_names())
            assert await client[database]["reservas_vista"].count_documents({}) == 1  # nothing dropped
            await client.drop_database(database)
            return names
        finally:
            await client.close()

    assert asyncio.run(after()) == before


@pytest.mark.parametrize(
    "error",
    [
        ServerSelectionTimeoutError("127.0.0.1:1: [Errno 111] Connection refused\nTopology Description: <...>"),
        OperationFailure("not authorized on eventflow_reservas\nmore"),
        ValueError("RESERVAS_MONGODB_DATABASE is bad\nsecond line"),
        RuntimeError("something nobody foresaw\nat line 2"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_every_error_is_one_line_and_a_non_zero_exit(
    error: Exception, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVENTFLOW_DEBUG", raising=False)
    monkeypatch.setenv("MONGODB_URI", "mongodb://reservas:s3cret@db.example:27017/?authSource=admin")

    def failing(*args: object, **kwargs: object) -> int:
        raise error

    monkeypatch.setattr(projections_cli, "run_dead_letters", failing)
    assert cli.main(["projections", "dead-letters"]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eventflow projections dead-letters: "), captured.err
    assert "Traceback" not in captured.err and "s3cret" not in captured.err
    if isinstance(error, ServerSelectionTimeoutError):
        assert "MongoDB at mongodb://reservas:[redacted]@db.example:27017" in lines[0] and "did not answer" in lines[0]


def test_token_and_status_find_the_issuer_key_the_same_way(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One lookup (infra.keys.private_key): the variable, else <data dir>/keys; without either, both say where."""
    from infra import keys, status

    for name in (keys.ISSUER_PRIVATE_KEY, f"{keys.ISSUER_PRIVATE_KEY}_FILE"):
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path / "empty"
    assert cli.main(["token", "--role", "admin", "--data-dir", str(empty)]) == 1
    assert f"no key at {empty / 'keys' / 'issuer.key'}" in capsys.readouterr().err
    token, note = status._mint_admin_token({}, empty / "keys")
    assert token is None and "no key at" in note and "--token" in note
    keys.ensure_keys(tmp_path / "data" / "keys")
    assert cli.main(["token", "--role", "admin", "--data-dir", str(tmp_path / "data")]) == 0
    assert capsys.readouterr().out.count(".") == 2  # a signed token: header.payload.signature
    assert status._mint_admin_token({}, tmp_path / "data" / "keys")[0] is not None
