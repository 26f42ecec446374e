"""The `eventflow` command: `eventflow up` runs the whole system on this machine.

Each subcommand is registered by one `add_<name>(commands)` function listed in COMMANDS: it adds its
subparser and sets `handler` (a function of the parsed arguments returning the exit code). Handlers
import what they need when they run, so `eventflow --help` stays fast and imports no service.

Extension point: reservas adds `eventflow projector` (run the projections' projector as its own process)
and `eventflow projections rebuild` (drop and rebuild the read models) as two more `add_*` functions
appended to COMMANDS.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def add_up(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from infra.stack import DEFAULT_MONGODB_PORT, DEFAULT_REDIS_PORT, SERVICES  # noqa: PLC0415

    ports = ", ".join(f"{s.port_var} ({s.default_port})" for s in SERVICES)
    parser = commands.add_parser(
        "up",
        help="run MongoDB, Redis and the three services until Ctrl-C",
        description=(
            "Start SecantusDB and redis-server (unless MONGODB_URI / REDIS_URL are set), then usuarios, eventos "
            "and reservas as separate processes; load demo data into an empty system; run until Ctrl-C or "
            "SIGTERM, then stop everything. Data and logs live in the data directory and survive restarts."
        ),
        epilog=(
            f"environment: {ports}; EVENTFLOW_MONGODB_PORT ({DEFAULT_MONGODB_PORT}), "
            f"EVENTFLOW_REDIS_PORT ({DEFAULT_REDIS_PORT}); MONGODB_URI, REDIS_URL to use running servers."
        ),
    )
    parser.add_argument("--no-demo", dest="demo", action="store_false", help="do not load the demo data")
    parser.add_argument("--data-dir", type=Path, default=Path(".data"), help="data and logs (default: .data)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface the services listen on (default: 127.0.0.1; 0.0.0.0 for all)"
    )
    parser.add_argument(
        "--start-timeout", type=float, default=90.0, metavar="SECONDS",
        help="how long each piece may take to start (default: 90)",
    )  # fmt: skip
    parser.set_defaults(handler=_run_up)


def _run_up(args: argparse.Namespace) -> int:
    from infra import stack  # noqa: PLC0415

    options = stack.Options(
        data_dir=args.data_dir, host=args.host, demo=args.demo, start_timeout=args.start_timeout
    )
    return stack.up(options)


def add_projector(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "projector",
        help="run reservas' read-model projector as its own process",
        description=(
            "Keep reservas' read models (ListReservas, GetEstadisticasEvento) up to date from its event store "
            "until Ctrl-C or SIGTERM. Several may run at once. Run reservas with EVENTFLOW_PROJECTOR=off to "
            "leave this work to separate projector processes."
        ),
        epilog="environment: MONGODB_URI, RESERVAS_MONGODB_DATABASE (as reservas).",
    )
    parser.set_defaults(handler=_run_projector)


def _run_projector(args: argparse.Namespace) -> int:
    from reservas.projections.cli import run_projector  # noqa: PLC0415

    return run_projector()


def add_projections(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("projections", help="manage reservas' read models")
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    rebuild = actions.add_parser(
        "rebuild",
        help="drop the read models and rebuild them from the event store",
        description=(
            "Drop reservas' read models and rebuild them from every reservation's event stream, with a progress "
            "bar on stderr; running projectors pause meanwhile and then follow on from the rebuilt state."
        ),
        epilog="environment: MONGODB_URI, RESERVAS_MONGODB_DATABASE (as reservas).",
    )
    rebuild.set_defaults(handler=_run_projections_rebuild)


def _run_projections_rebuild(args: argparse.Namespace) -> int:
    from reservas.projections.cli import run_rebuild  # noqa: PLC0415

    return run_rebuild()


def add_compose_secrets(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "compose-secrets",
        help="make the passwords and keys docker-compose.yml needs (.env and secrets/)",
        description=(
            "Write .env (the MongoDB users' and Redis' passwords) and secrets/ (MongoDB's root password, Redis' "
            "users, the deployment's keys) beside docker-compose.yml, with random values. What exists is kept; "
            "what is missing is added. docker compose refuses to start without them."
        ),
    )
    parser.add_argument(
        "--dir", type=Path, default=Path("."), help="the directory of docker-compose.yml (default: the current one)"
    )
    parser.set_defaults(handler=_run_compose_secrets)


def _run_compose_secrets(args: argparse.Namespace) -> int:
    from infra.compose_secrets import ComposeSecretsError, ensure_compose_secrets  # noqa: PLC0415

    try:
        files = ensure_compose_secrets(args.dir)
    except (ComposeSecretsError, OSError) as error:
        print(f"eventflow compose-secrets: {error}", file=sys.stderr)
        return 1
    print(f"compose secrets ready: {files.env_file} and {files.secrets_dir}/ (kept private: do not commit them)")
    return 0


#: Every subcommand, in the order `eventflow --help` lists them.
COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    add_up,
    add_projector,
    add_projections,
    add_compose_secrets,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eventflow", description="EventFlow: the event-ticketing backend.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
