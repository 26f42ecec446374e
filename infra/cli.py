"""The `eventflow` command: `eventflow up` runs the whole system on this machine.

Each subcommand is registered by one `add_<name>(commands)` function listed in COMMANDS: it adds its
subparser and sets `handler` (a function of the parsed arguments returning the exit code). Handlers
import what they need when they run, so `eventflow --help` stays fast and imports no service.

Extension point: reservas adds `eventflow projector` (run the projections' projector as its own process)
and `eventflow projections rebuild|dead-letters|replay-dead-letters` (rebuild the read models; list and
replay the streams they could not take) as two more `add_*` functions appended to COMMANDS.
"""

from __future__ import annotations

import argparse
import os
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
    parser.add_argument(
        "--replicas-reservas", type=int, default=1, metavar="N", dest="reservas_replicas",
        help="run N reservas processes, on RESERVAS_PORT and the ports after it (default: 1)",
    )  # fmt: skip
    parser.add_argument(
        "--tls", action="store_true",
        help="serve TLS, with mutual TLS between reservas and usuarios/eventos; certificates in <data dir>/certs "
        "(made by `eventflow certs` when missing or expiring)",
    )  # fmt: skip
    parser.add_argument(
        "--trace", choices=["console", "otlp"], default=None,
        help="trace every call (OTEL_TRACES_EXPORTER for the services): console writes each span as a line of "
        "the service's log; otlp exports to OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4317). "
        "Default: as the OTEL_* variables say, off when they say nothing",
    )  # fmt: skip
    parser.set_defaults(handler=_run_up)


def _run_up(args: argparse.Namespace) -> int:
    from infra import stack  # noqa: PLC0415

    options = stack.Options(
        data_dir=args.data_dir, host=args.host, demo=args.demo, start_timeout=args.start_timeout,
        reservas_replicas=args.reservas_replicas, tls=args.tls, trace=args.trace,
    )
    return stack.up(options)


def add_certs(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "certs",
        help="make a local CA and the TLS certificates of the services, reservas and operators",
        description=(
            "Make, in DIR, a local certificate authority (ca.pem), a certificate for each service (usuarios, "
            "eventos, reservas: for localhost, 127.0.0.1, ::1 and the service's name), the client certificate "
            "reservas presents to usuarios and eventos (reservas-client.pem), and one for people and tools "
            "(operator.pem, for grpcurl -cert/-key). Keys are owner-only. Files that are still good are kept; "
            "missing, broken or soon-expiring ones are made again (all of them when the CA is)."
        ),
        epilog="`eventflow up --tls` runs this into <data dir>/certs itself.",
    )
    parser.add_argument(
        "--dir", type=Path, default=Path(".data/certs"), help="where the files go (default: .data/certs)"
    )
    parser.add_argument(
        "--host", action="append", default=[], metavar="NAME",
        help="another name or address the services are reached by (repeatable)",
    )  # fmt: skip
    parser.set_defaults(handler=_run_certs)


def _run_certs(args: argparse.Namespace) -> int:
    from infra import certs  # noqa: PLC0415

    outcome = certs.ensure(args.dir, hosts=args.host)
    directory = args.dir
    for name, what in outcome.items():
        files = certs.files(directory, name)
        print(f"{what:<8} {files.cert}  (key: {files.key.name})")
    operator = certs.files(directory, certs.OPERATOR)
    print(
        "\nA service takes EVENTFLOW_TLS_CERT_FILE, EVENTFLOW_TLS_KEY_FILE (its own pair) and EVENTFLOW_TLS_CA_FILE;\n"
        "reservas also EVENTFLOW_TLS_CLIENT_CERT_FILE and EVENTFLOW_TLS_CLIENT_KEY_FILE (reservas-client).\n"
        "Running services use renewed files once restarted. usuarios and eventos require a client certificate:\n"
        f"  grpcurl -cacert {directory / 'ca.pem'} -cert {operator.cert} -key {operator.key} localhost:50051 list"
    )
    return 0


def add_projector(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "projector",
        help="run reservas' read-model projector as its own process",
        description=(
            "Keep reservas' read models (ListReservas, GetEstadisticasEvento) up to date from its event store "
            "until Ctrl-C or SIGTERM. Several may run at once. Run reservas with EVENTFLOW_PROJECTOR=off to "
            "leave this work to separate projector processes."
        ),
        epilog=(
            _FINDS_THE_STACK + " PROJECTOR_METRICS_PORT (9450; 0: none): Prometheus /metrics (lag, events applied, "
            "dead letters) on GRPC_BIND_HOST (127.0.0.1)."
        ),
    )
    _data_dir_option(parser)
    parser.set_defaults(handler=_run_projector)


#: How the commands that reach a running stack find it (infra.stack.locate), for their --help.
_FINDS_THE_STACK = (
    "It finds MongoDB as `eventflow up` does: MONGODB_URI, else EVENTFLOW_MONGODB_PORT, else the `eventflow up` "
    "running on --data-dir, else 127.0.0.1:27017; the database is RESERVAS_MONGODB_DATABASE (as reservas)."
)


def _data_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, default=Path(".data"),
        help="the data directory of the `eventflow up` to reach (default: .data)",
    )  # fmt: skip


def _reservas_database(args: argparse.Namespace) -> tuple[str, str]:
    """reservas' MongoDB and database, found as `eventflow up` finds them; kept on `args` for error messages."""
    from reservas.projections.cli import database_settings  # noqa: PLC0415

    args.mongodb_uri, database = database_settings(data_dir=args.data_dir)
    return args.mongodb_uri, database


def _run_projector(args: argparse.Namespace) -> int:
    from reservas.projections.cli import ProjectorSettings, run_projector  # noqa: PLC0415

    settings = ProjectorSettings.from_env(os.environ, args.data_dir)
    args.mongodb_uri = settings.mongodb_uri  # for main()'s error message
    return run_projector(settings)


def add_projections(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("projections", help="manage reservas' read models")
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True, dest="action")
    rebuild = actions.add_parser(
        "rebuild",
        help="drop the read models and rebuild them from the event store",
        description=(
            "Drop reservas' read models and rebuild them from every reservation's event stream, with a progress "
            "bar on stderr; running projectors pause meanwhile and then follow on from the rebuilt state. It says "
            "which database it rebuilds, and refuses one that holds no reservation events."
        ),
        epilog=_FINDS_THE_STACK,
    )
    _data_dir_option(rebuild)
    rebuild.set_defaults(handler=_run_projections_rebuild)
    dead_letters = actions.add_parser(
        "dead-letters",
        help="list the reservations whose events the read models could not take",
        description=(
            "List the dead letters: reservations whose stream the projector (or a rebuild) could not apply to the "
            "read models and set aside, with the event it stopped at (version, type), the error, how many "
            "times it was tried, and when it first and last failed. Their views hold the state before that event."
        ),
        epilog=_FINDS_THE_STACK,
    )
    _data_dir_option(dead_letters)
    dead_letters.add_argument("--json", action="store_true", help="print a JSON array, errors whole")
    dead_letters.set_defaults(handler=_run_projections_dead_letters)
    replay = actions.add_parser(
        "replay-dead-letters",
        help="apply the dead letters again (after a fix)",
        description=(
            "Apply the dead letters' streams to the read models again, once each: those that apply now are removed, "
            "the others stay with their new error. Exit code 0 when none is left of those tried, 1 otherwise."
        ),
        epilog=_FINDS_THE_STACK,
    )
    _data_dir_option(replay)
    replay.add_argument("reserva_ids", nargs="*", metavar="RESERVA_ID", help="only these (default: all)")
    replay.set_defaults(handler=_run_projections_replay_dead_letters)


def _run_projections_rebuild(args: argparse.Namespace) -> int:
    from reservas.projections.cli import run_rebuild  # noqa: PLC0415

    return run_rebuild(*_reservas_database(args))


def _run_projections_dead_letters(args: argparse.Namespace) -> int:
    from reservas.projections.cli import run_dead_letters  # noqa: PLC0415

    return run_dead_letters(*_reservas_database(args), as_json=args.json)


def _run_projections_replay_dead_letters(args: argparse.Namespace) -> int:
    from reservas.projections.cli import run_replay_dead_letters  # noqa: PLC0415

    return run_replay_dead_letters(*_reservas_database(args), args.reserva_ids)


def add_status(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "status",
        help="one look at a running stack: health, versions, uptime, sagas, projector lag, tickets left",
        description=(
            "Print, for a running stack, each process's health (grpc.health.v1), version and uptime (its /metrics), "
            "the sagas open and the oldest one's age, the projector's lag, and the tickets left on the events on "
            "sale (soonest first). By default the stack of `eventflow up` with this environment (the same *_PORT "
            "and *_METRICS_PORT variables) and --data-dir (its keys mint a short admin token for ListEventos); "
            "--usuarios, --eventos and --reservas name running services instead. A table on a terminal, one JSON "
            "document with --json. Exit code 0 when everything answered and serves, 1 otherwise."
        ),
        epilog=(
            "Each service's /metrics is looked for on the host of its address and its *_METRICS_PORT (9451, 9452, "
            "9453) unless --<service>-metrics says where. Without a token or key, the tickets come from reservas' "
            "/metrics (the events it sold lately)."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--data-dir", type=Path, default=Path(".data"), help="`eventflow up`'s (default: .data)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="the --host `eventflow up` was given (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--replicas-reservas", type=int, default=1, metavar="N", dest="reservas_replicas",
        help="the --replicas-reservas `eventflow up` was given (default: 1)",
    )  # fmt: skip
    parser.add_argument("--tls", action="store_true", help="the stack serves TLS: <data dir>/certs, as `up --tls`")
    for name in ("usuarios", "eventos", "reservas"):
        more = " (repeat for each replica)" if name == "reservas" else ""
        parser.add_argument(f"--{name}", action="append", default=[], metavar="HOST:PORT", help=f"{name}'s gRPC{more}")
        parser.add_argument(
            f"--{name}-metrics", action="append", default=[], metavar="HOST:PORT", help=f"{name}'s /metrics{more}"
        )
    parser.add_argument(
        "--projector-metrics", action="append", default=[], metavar="HOST:PORT",
        help="a standalone projector's /metrics (`eventflow projector`; repeatable)",
    )  # fmt: skip
    parser.add_argument("--token", default=None, help="an admin token for ListEventos (default: minted from the keys)")
    parser.add_argument("--events", type=int, default=20, metavar="N", help="show the N soonest events (default: 20)")
    parser.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS", help="per check (default: 3)")
    parser.set_defaults(handler=_run_status)


def _run_status(args: argparse.Namespace) -> int:
    from infra import status  # noqa: PLC0415

    if not 1 <= args.events <= 500:
        print("eventflow status: --events must be from 1 to 500", file=sys.stderr)
        return 2
    services = ("usuarios", "eventos", "reservas")
    try:
        targets = status.discover(
            os.environ, data_dir=args.data_dir, host=args.host, replicas=args.reservas_replicas, use_tls=args.tls,
            given={s: getattr(args, s) for s in services},
            given_metrics={s: getattr(args, f"{s}_metrics") for s in services},
            projector_metrics=args.projector_metrics, token=args.token, timeout=args.timeout, events=args.events,
        )  # fmt: skip
    except status.StatusError as error:
        print(f"eventflow status: {error}", file=sys.stderr)
        return 2
    return status.run(targets, as_json=args.json)


def _duration(text: str) -> float:
    """Seconds from "90", "90s", "30m", "8h" or "7d"."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 1)
    try:
        seconds = float(number) * unit
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 90s, 30m, 8h or 7d") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"a duration is more than 0, not {text!r}")
    return seconds


def add_keys(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "keys",
        help="make this deployment's keys (once; existing keys are kept)",
        description=(
            "Make the keys a deployment needs, unless they exist: the issuer's Ed25519 key pair (signs people's "
            "tokens), reservas' key pair (signs its own calls) and the page-token key. The directory is 0700 and "
            "private keys 0600. `eventflow up` does this by itself in <data dir>/keys; docker-compose mounts them."
        ),
    )
    parser.add_argument("--dir", type=Path, default=Path(".data/keys"), help="where (default: .data/keys)")
    parser.set_defaults(handler=_run_keys)


def _run_keys(args: argparse.Namespace) -> int:
    from infra import keys  # noqa: PLC0415

    files = keys.ensure_keys(args.dir)
    print(f"keys in {files.directory}: issuer.pub and reservas.pub are public; the rest stays private")
    return 0


def add_token(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "token",
        help="print a signed token for a person or a tool",
        description=(
            "Print a bearer token signed with this deployment's key, for the metadata "
            "'authorization: Bearer <token>'. admin may call every public RPC; cliente is bound to one user "
            "(its profile, its reservations, buying for itself); servicio is reservas' own identity, signed "
            "with reservas' key (for tests and tools that play reservas)."
        ),
        epilog=(
            "keys: <data dir>/keys as `eventflow up` made them, or EVENTFLOW_ISSUER_PRIVATE_KEY[_FILE] "
            "(EVENTFLOW_SERVICE_PRIVATE_KEY[_FILE] for servicio)."
        ),
    )
    parser.add_argument("--role", required=True, choices=["admin", "cliente", "servicio"])
    parser.add_argument("--usuario", default="", metavar="ID", help="the user a cliente token is bound to")
    parser.add_argument("--ttl", type=_duration, default=3600.0, help="how long it is valid (default: 1h; at most 7d)")
    parser.add_argument("--sub", default="", help="who holds it, for the logs (default: the role, or the user)")
    parser.add_argument("--data-dir", type=Path, default=Path(".data"), help="where `eventflow up` keeps its keys")
    parser.set_defaults(handler=_run_token)


def _run_token(args: argparse.Namespace) -> int:
    from infra import auth, keys  # noqa: PLC0415

    role = auth.Role(args.role)
    if (role is auth.Role.CLIENTE) != bool(args.usuario):
        print("eventflow token: --usuario ID is required for a cliente token, and only for one", file=sys.stderr)
        return 2
    servicio = role is auth.Role.SERVICIO
    name = keys.SERVICE_PRIVATE_KEY if servicio else keys.ISSUER_PRIVATE_KEY
    files = keys.KeyFiles(args.data_dir / "keys")
    path = files.service_private if servicio else files.issuer_private
    key = keys.private_key(os.environ, name, path)
    issuer = auth.service_issuer(key) if servicio else auth.TokenIssuer(key)
    sub = args.sub or (f"usuario:{args.usuario}" if args.usuario else role.value)
    print(issuer.mint(role, sub, usuario_id=args.usuario, ttl_seconds=args.ttl))
    return 0


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
    from infra.compose_secrets import ensure_compose_secrets  # noqa: PLC0415

    files = ensure_compose_secrets(args.dir)
    print(f"compose secrets ready: {files.env_file} and {files.secrets_dir}/ (kept private: do not commit them)")
    return 0


#: Every subcommand, in the order `eventflow --help` lists them.
COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    add_up,
    add_status,
    add_keys,
    add_certs,
    add_token,
    add_projector,
    add_projections,
    add_compose_secrets,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eventflow", description="EventFlow: the event-ticketing backend.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True, dest="command")
    for add in COMMANDS:
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Whatever goes wrong is one line on stderr, `eventflow <command>: <what>`, and exit code 1
    (2 for bad arguments, as argparse answers them): errors are mapped here, once, not in each command.
    EVENTFLOW_DEBUG=1 lets an unexpected error's traceback through."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        if os.environ.get("EVENTFLOW_DEBUG") == "1":
            raise
        command = " ".join(str(part) for part in (args.command, getattr(args, "action", None)) if part)
        print(f"eventflow {command}: {error_line(error, args)}", file=sys.stderr)
        return 1


def error_line(error: BaseException, args: argparse.Namespace | None = None) -> str:
    """One line that says what went wrong and, where it can, what to do: the CLI's error table."""
    from pymongo.errors import ConnectionFailure, PyMongoError  # noqa: PLC0415

    from infra.redact import redact_uri  # noqa: PLC0415
    from infra.stack import MONGODB_PORT_VAR, StackError  # noqa: PLC0415

    def first_line(text: object) -> str:
        lines = str(text).strip().splitlines()
        return lines[0] if lines else ""

    where = redact_uri(getattr(args, "mongodb_uri", "") or "") or "the MongoDB configured"
    if isinstance(error, ConnectionFailure):  # ServerSelectionTimeoutError, AutoReconnect, NetworkTimeout
        return (
            f"MongoDB at {where} did not answer ({type(error).__name__}): is the stack up? Set MONGODB_URI or "
            f"{MONGODB_PORT_VAR}, or --data-dir for a running `eventflow up`"
        )
    if isinstance(error, PyMongoError):
        return f"MongoDB at {where} refused: {type(error).__name__}: {first_line(error)}"
    if isinstance(error, StackError | ValueError | OSError):  # the message names the problem (and the variable)
        return first_line(error)
    code, details = getattr(error, "code", None), getattr(error, "details", None)
    if callable(code) and callable(details):  # grpc.RpcError
        return f"{code().name}: {details()}"
    return f"unexpected {type(error).__name__}: {first_line(error)} (EVENTFLOW_DEBUG=1 shows where)"


if __name__ == "__main__":
    sys.exit(main())
