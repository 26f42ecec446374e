"""`eventflow projector`, `eventflow projections rebuild`, `eventflow projections dead-letters` and
`eventflow projections replay-dead-letters` (also `python -m reservas.projections ...`).

All find MongoDB as every `eventflow` command finds the stack (infra.stack.locate: MONGODB_URI,
EVENTFLOW_MONGODB_PORT, the `eventflow up` running on --data-dir) and name reservas' database as the service does
(RESERVAS_MONGODB_DATABASE). Errors are reported by infra.cli.main, once for every command.
`eventflow projector` also serves Prometheus /metrics (its lag, events applied, dead letters:
reservas.projections.metrics) on GRPC_BIND_HOST (as the services do) and PROJECTOR_METRICS_PORT (9450; 0: none).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from dataclasses import dataclass
from typing import TextIO

from pymongo import uri_parser

from infra import logs
from infra.metrics import Metrics, metrics_port
from infra.mongo import create_client
from infra.redact import redact_uri
from infra.stack import DEFAULT_DATA_DIR, MONGODB_PORT_VAR, locate
from reservas.config import Config
from reservas.event_store import COLLECTION as EVENTS
from reservas.projections.checkpoint import Checkpoints, RebuildConflict
from reservas.projections.dead_letters import DeadLetter, DeadLetters
from reservas.projections.metrics import ProjectorCollector
from reservas.projections.poison import PoisonGuard
from reservas.projections.projector import ProjectorTask, default_owner
from reservas.projections.read_models import ReadModels
from reservas.projections.rebuild import rebuild
from reservas.projections.source import StreamSource

log = logging.getLogger(__name__)


def database_settings(env: Mapping[str, str] = os.environ, data_dir: Path = DEFAULT_DATA_DIR) -> tuple[str, str]:
    """(MongoDB URI, reservas' database): the database as the reservas service names it, the MongoDB found as
    every `eventflow` command finds the stack (infra.stack.locate: MONGODB_URI, EVENTFLOW_MONGODB_PORT, the
    `eventflow up` running on `data_dir`, its default port), never whatever happens to answer on 27017."""
    config = Config.from_env(env, keys=False)  # the projector serves no RPC: it needs no keys
    return locate(env, data_dir).mongodb_uri, config.mongodb_database


@dataclass(frozen=True)
class ProjectorSettings:
    """What `eventflow projector` reads: reservas' store (database_settings) and where it serves /metrics."""

    mongodb_uri: str
    mongodb_database: str
    bind_host: str
    metrics_port: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, data_dir: Path = DEFAULT_DATA_DIR) -> ProjectorSettings:
        uri, database = database_settings(env, data_dir)
        bind_host = Config.from_env(env, keys=False).bind_host
        return cls(uri, database, bind_host, metrics_port(env, "projector"))


async def serve_projector(uri: str, database: str, metrics: Metrics | None = None) -> None:
    """Run the projector until SIGTERM/SIGINT, with its series on `metrics` (served meanwhile) when given."""
    client = create_client(uri, "eventflow-projector")
    task = ProjectorTask(client[database]).start()
    if metrics is not None:
        metrics.registry.register(ProjectorCollector(task.projector))
        metrics.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("projector started", extra={"database": database, "owner": task.projector.owner})
    assert task.task is not None
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait({task.task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    await task.stop()
    await client.close()
    if metrics is not None:
        metrics.stop()
    log.info("projector stopped")


async def rebuild_read_models(uri: str, database: str) -> int:
    """Drop and rebuild the read models with a progress bar on stderr; the exit code."""
    client = create_client(uri, "eventflow-projections-rebuild")
    try:
        db = client[database]
        where = f"database {database} at {_host(uri)}"
        if await db[EVENTS].find_one({}, {"_id": 1}) is None:
            raise NotEventFlowData(
                f"refusing to rebuild: {where} holds no reservation events ({EVENTS} is empty or missing), so it is "
                f"not reservas' database or there is nothing to rebuild; check MONGODB_URI / {MONGODB_PORT_VAR} / "
                "--data-dir and RESERVAS_MONGODB_DATABASE"
            )
        print(f"rebuilding the read models of {where}", file=sys.stderr)
        checkpoint = await Checkpoints(db).load()
        if checkpoint is not None and checkpoint.rebuilding(stale_after=30.0):
            print(f"a rebuild is already running ({checkpoint.rebuild_owner}); try again when it ends", file=sys.stderr)
            return 1
        try:
            result = await rebuild(db, owner=f"rebuild:{default_owner()}", clear=True, expected=checkpoint, progress=True)
        except RebuildConflict as conflict:
            print(f"another rebuild started meanwhile ({conflict}); try again when it ends", file=sys.stderr)
            return 1
        print(
            f"rebuilt the read models of {database} from {result.streams} streams in {result.seconds:.2f}s "
            f"({result.streams_per_second:.0f} streams/s)",
            file=sys.stderr,
        )
        if result.dead_letters:
            print(
                f"{result.dead_letters} of them could not be applied and were set aside as dead letters: "
                f"`eventflow projections dead-letters` lists them with their errors, "
                f"`eventflow projections replay-dead-letters` applies them again after a fix",
                file=sys.stderr,
            )
        return 0
    finally:
        await client.close()


class NotEventFlowData(ValueError):
    """The database named holds no EventFlow data: a destructive command refuses it."""


def _host(uri: str) -> str:
    """host:port of a MongoDB URI (the hosts, for a replica set), without credentials or options."""
    with contextlib.suppress(Exception):
        nodes = uri_parser.parse_uri(uri)["nodelist"]
        return ",".join(f"{host}:{port}" for host, port in nodes)
    return redact_uri(uri)


def dead_letters_table(letters: Sequence[DeadLetter], error_width: int = 90) -> str:
    """The dead letters as a table, one line each (the error cut to `error_width`; --json has it whole)."""
    when = "%Y-%m-%d %H:%M:%SZ"
    rows = [("RESERVA", "VERSION", "TIPO", "ATTEMPTS", "FIRST FAILURE", "LAST FAILURE", "ERROR")]
    for letter in letters:
        error = f"{letter.error_type}: {letter.error_message}".replace("\n", " ")
        if len(error) > error_width:
            error = error[: error_width - 3] + "..."
        first, last = letter.first_failure.strftime(when), letter.last_failure.strftime(when)
        rows.append((letter.reserva_id, str(letter.version), letter.tipo, str(letter.attempts), first, last, error))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]  # the error, last, is not padded
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]) for row in rows]
    return "".join(line + "\n" for line in lines)


async def list_dead_letters(uri: str, database: str, as_json: bool = False, out: TextIO | None = None) -> int:
    """Print the dead letters (a table, or JSON); the exit code."""
    out = out if out is not None else sys.stdout
    client = create_client(uri, "eventflow-projections-dead-letters")
    try:
        letters = await DeadLetters(client[database]).list()
    finally:
        await client.close()
    if as_json:
        out.write(json.dumps([letter.to_json() for letter in letters], indent=2) + "\n")
    elif not letters:
        out.write(f"no dead letters in {database}: every stream is in the read models\n")
    else:
        out.write(dead_letters_table(letters))
        out.write(
            f"{len(letters)} dead letter(s): each reservation's view holds its state before the event named; "
            "`eventflow projections replay-dead-letters` applies them again after a fix\n"
        )
    return 0


async def replay_dead_letters(
    uri: str, database: str, reserva_ids: Sequence[str] = (), out: TextIO | None = None
) -> int:
    """Try the dead letters (these reservations' only, when given) again: those that apply now are removed,
    the others keep their new error. The exit code: 0 when none is left of those tried, 1 otherwise."""
    out = out if out is not None else sys.stdout
    client = create_client(uri, "eventflow-projections-replay")
    try:
        db = client[database]
        dead_letters = DeadLetters(db)
        letters = await dead_letters.list(reserva_ids or None)
        unknown = sorted(set(reserva_ids) - {letter.reserva_id for letter in letters})
        for reserva_id in unknown:
            print(f"{reserva_id} is not a dead letter", file=sys.stderr)
        if not letters:
            out.write(f"no dead letters to replay in {database}\n")
            return 1 if unknown else 0
        guard = PoisonGuard(ReadModels(db), StreamSource(db), dead_letters, by=f"replay:{default_owner()}")
        outcome = await guard.replay([letter.reserva_id for letter in letters])
        still = [failure.reserva_id for failure in outcome.dead_lettered]
        out.write(
            f"replayed {len(letters)} dead letter(s): {len(outcome.resolved)} apply now and were removed, "
            f"{len(still)} still fail\n"
        )
        if still:
            out.write(dead_letters_table(await dead_letters.list(still)))
        return 1 if still or unknown else 0
    finally:
        await client.close()


def run_projector(settings: ProjectorSettings) -> int:
    logs.configure("reservas-projector")
    metrics = Metrics("projector", host=settings.bind_host, port=settings.metrics_port)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_projector(settings.mongodb_uri, settings.mongodb_database, metrics))
    return 0


def run_rebuild(uri: str, database: str) -> int:
    logs.configure("reservas-projections")
    return asyncio.run(rebuild_read_models(uri, database))


def run_dead_letters(uri: str, database: str, as_json: bool = False) -> int:
    return asyncio.run(list_dead_letters(uri, database, as_json))


def run_replay_dead_letters(uri: str, database: str, reserva_ids: Sequence[str] = ()) -> int:
    logs.configure("reservas-projections")
    return asyncio.run(replay_dead_letters(uri, database, reserva_ids))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m reservas.projections projector|rebuild|dead-letters|replay-dead-letters ...`: the same commands
    as `eventflow projector` and `eventflow projections ...`, through the same parser and error handling."""
    from infra import cli  # noqa: PLC0415 - infra.cli imports this module's runners lazily too

    args = list(sys.argv[1:] if argv is None else argv)
    return cli.main(args if args[:1] == ["projector"] else ["projections", *args])
