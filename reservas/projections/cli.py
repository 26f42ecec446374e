"""`eventflow projector` and `eventflow projections rebuild` (also `python -m reservas.projections ...`).

Both are configured like reservas: MONGODB_URI and RESERVAS_MONGODB_DATABASE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence

from pymongo.errors import PyMongoError

from infra import logs
from infra.mongo import create_client
from infra.redact import redact_uri
from infra.stack import MONGODB_PORT_VAR
from reservas.config import Config
from reservas.projections.checkpoint import Checkpoints, RebuildConflict
from reservas.projections.projector import ProjectorTask, default_owner
from reservas.projections.rebuild import rebuild

log = logging.getLogger(__name__)


def database_settings(env: Mapping[str, str] = os.environ) -> tuple[str, str]:
    """(MongoDB URI, reservas' database), read as the reservas service reads them; without MONGODB_URI, the
    embedded store of `eventflow up` on EVENTFLOW_MONGODB_PORT when that is set (not whatever answers on 27017)."""
    config = Config.from_env(env, keys=False)  # the projector serves no RPC: it needs no keys
    uri = config.mongodb_uri
    if not env.get("MONGODB_URI") and env.get(MONGODB_PORT_VAR):
        uri = f"mongodb://127.0.0.1:{env[MONGODB_PORT_VAR]}/?directConnection=true"
    return uri, config.mongodb_database


def _unreachable(uri: str, error: PyMongoError) -> int:
    print(
        f"MongoDB at {redact_uri(uri)} did not answer ({type(error).__name__}); is the stack up? "
        f"Set MONGODB_URI (or {MONGODB_PORT_VAR} for `eventflow up`'s embedded store).",
        file=sys.stderr,
    )
    return 1


async def serve_projector(uri: str, database: str) -> None:
    """Run the projector until SIGTERM/SIGINT."""
    client = create_client(uri, "eventflow-projector")
    task = ProjectorTask(client[database]).start()
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
    log.info("projector stopped")


async def rebuild_read_models(uri: str, database: str) -> int:
    """Drop and rebuild the read models with a progress bar on stderr; the exit code."""
    client = create_client(uri, "eventflow-projections-rebuild")
    try:
        db = client[database]
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
        return 0
    finally:
        await client.close()


def run_projector() -> int:
    logs.configure("reservas-projector")
    uri, database = database_settings()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_projector(uri, database))
    return 0


def run_rebuild() -> int:
    logs.configure("reservas-projections")
    uri, database = database_settings()
    try:
        return asyncio.run(rebuild_read_models(uri, database))
    except PyMongoError as error:
        return _unreachable(uri, error)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["projector"]:
        return run_projector()
    if args == ["rebuild"]:
        return run_rebuild()
    print("usage: python -m reservas.projections {projector|rebuild}", file=sys.stderr)
    return 2
