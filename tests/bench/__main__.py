"""`python -m tests.bench` (`make bench`): throughput, latency and memory of the real system, printed.

Scenarios, each against the same freshly started processes (see cluster.py):
  1. purchase saga: --buyers buyers, --concurrency at a time, 1 ticket each of an event with room for all;
  2. the race: --race-buyers buyers, --race-concurrency at a time, for --race-tickets tickets; then every
     reservation must settle and the four DESIGN.md invariants (tests/reservas/invariants.py) must hold;
  3. eventos' ReservarEntradas alone, --entradas-calls calls at --concurrency;
  4. peak RSS (VmHWM) of every process.
Exit status: 0 when every invariant held (however slow it was), 1 when one broke (the violations are
printed), 2 when the system could not be run (a process died or did not start: its log is kept).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import grpc

from eventflow.eventos.v1 import eventos_pb2, eventos_pb2_grpc
from eventflow.reservas.v1 import reservas_pb2, reservas_pb2_grpc
from eventflow.usuarios.v1 import usuarios_pb2, usuarios_pb2_grpc
from reservas.domain import Estado
from tests.bench.cluster import DATABASES, Cluster
from tests.bench.load import Call, Run, poll_pending, pool
from tests.reservas.invariants import Report, find_violations

CONFIRMADA = reservas_pb2.ESTADO_RESERVA_CONFIRMADA
DEADLINE = 120.0  # per call: generous, a loaded machine is slow, not wrong
SETTLE_TIMEOUT = 120.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--buyers", type=int, default=500, help="buyers in the purchase scenario (500)")
    parser.add_argument("--concurrency", type=int, default=50, help="purchases / ReservarEntradas in flight (50)")
    parser.add_argument("--race-buyers", type=int, default=2000, help="buyers racing for the tickets (2000)")
    parser.add_argument("--race-tickets", type=int, default=100, help="tickets they race for (100)")
    parser.add_argument("--race-concurrency", type=int, default=200, help="racing purchases in flight (200)")
    parser.add_argument("--entradas-calls", type=int, default=2000, help="ReservarEntradas calls (2000)")
    parser.add_argument("--quick", action="store_true", help="a small run: 100 buyers, a race of 300 for 30, 300 calls")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (printed at the end)")
    args = parser.parse_args(argv)
    if args.quick:
        args.buyers, args.race_buyers, args.race_tickets, args.entradas_calls = 100, 300, 30, 300
        args.concurrency, args.race_concurrency = min(args.concurrency, 20), min(args.race_concurrency, 50)
    for name in ("buyers", "concurrency", "race_buyers", "race_tickets", "race_concurrency", "entradas_calls"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@dataclass
class Row:
    """One line of the figures table, with the CPU seconds each process spent on it."""

    scenario: str
    run: Run
    unit: str
    cpu: dict[str, float]
    load_after: str = field(default_factory=load)


async def measure(cluster: Cluster, scenario: str, unit: str, calls: list[Call], concurrency: int) -> Row:
    before, client = cluster.cpu(), time.process_time()
    run = await pool(calls, concurrency)
    after = cluster.cpu()
    cpu = {name: after[name] - before[name] for name in after if name in before}
    cpu["bench client"] = time.process_time() - client
    return Row(scenario, run, unit, cpu)


@dataclass
class Clients:
    usuarios: usuarios_pb2_grpc.UsuariosServiceStub
    eventos: eventos_pb2_grpc.EventosServiceStub
    reservas: reservas_pb2_grpc.ReservasServiceStub


# ---- setting the scene -----------------------------------------------------------------------


async def create_usuarios(clients: Clients, n: int, first: int) -> list[str]:
    def create(i: int) -> Call:
        usuario = usuarios_pb2.Usuario(
            tipo_documento="CI", nro_documento=f"{i:08d}", nombre="Comprador", apellido=f"Bench {i}",
            email=f"comprador{i}@bench.example.com",
        )  # fmt: skip
        request = usuarios_pb2.CreateUsuarioRequest(usuario=usuario)
        return lambda: clients.usuarios.CreateUsuario(request, timeout=DEADLINE)

    run = await pool([create(i) for i in range(first, first + n)], 50)
    if len(run.ok) != n:
        raise RuntimeError(f"creating {n} users failed: {run.outcomes()}")
    return [u.id for u in run.ok]


async def create_evento(clients: Clients, nombre: str, aforo: int) -> eventos_pb2.Evento:
    evento = eventos_pb2.Evento(nombre=nombre, lugar="Antel Arena", aforo_total=aforo, precio=1500, moneda="UYU")
    evento.fecha.FromDatetime(datetime.now(UTC).replace(microsecond=0) + timedelta(days=60))
    return await clients.eventos.CreateEvento(eventos_pb2.CreateEventoRequest(evento=evento), timeout=DEADLINE)


def purchases(clients: Clients, usuarios: list[str], evento_id: str) -> list[Call]:
    def buy(usuario_id: str) -> Call:
        request = reservas_pb2.ReservarRequest(
            usuario_id=usuario_id, evento_id=evento_id, cantidad=1, medio_pago="tok_visa",
            idempotency_key=uuid.uuid4().hex,
        )  # fmt: skip
        return lambda: clients.reservas.Reservar(request, timeout=DEADLINE)

    return [buy(u) for u in usuarios]


# ---- checking what is stored -----------------------------------------------------------------


async def settle(cluster: Cluster, clients: Clients, timeout: float) -> tuple[Report, float]:
    """Wait until no reservation is PENDIENTE (recovery settles any whose call gave up), then check.

    Still unsettled after `timeout` is not a broken invariant (a saga may stay PENDIENTE up to the hold
    TTL, 600 s by default): then the check allows sagas in flight, and the report counts them.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    mongo = cluster.mongo()
    dbs = {f"{service}_db": name for service, name in DATABASES.items()}
    try:
        while True:
            report = await find_violations(mongo, allow_pending=True, **dbs)
            unsettled = [r.id for r in report.reservas.values() if not r.settled]
            if not unsettled or loop.time() - started > timeout:
                break
            await poll_pending(clients.reservas, unsettled, until=started + timeout)
        waited = loop.time() - started
        return (report if unsettled else await find_violations(mongo, **dbs)), waited
    finally:
        await mongo.close()


def answered_but_not_stored(run: Run, report: Report) -> list[str]:
    """A buyer told CONFIRMADA whose reservation is not CONFIRMADA in the log: a lie to a customer."""
    wrong = []
    for reserva in run.ok:
        stored = report.reservas.get(reserva.id)
        if reserva.estado == CONFIRMADA and (stored is None or stored.estado is not Estado.CONFIRMADA):
            now = stored.estado if stored else "missing"
            wrong.append(f"reservation {reserva.id} was answered CONFIRMADA but is {now}")
    return wrong


# ---- printing --------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def print_table(rows: list[Row]) -> None:
    print(f"\n{'scenario':<34}{'calls':>6}{'wall s':>8}{'rate/s':>8}{'1st half':>9}{'2nd half':>9}{'p50 ms':>8}"
          f"{'p95 ms':>8}{'p99 ms':>8}{'max ms':>8}  load after")  # fmt: skip
    for row in rows:
        p = row.run.percentiles()
        first, second = row.run.halves()
        latencies = "".join(f"{ms(p[k]):>8}" for k in ("p50", "p95", "p99", "max"))
        print(f"{row.scenario:<34}{len(row.run.calls):>6}{row.run.elapsed:>8.1f}{row.run.rate:>8.1f}{first:>9.1f}"
              f"{second:>9.1f}{latencies}  {row.load_after}")  # fmt: skip
    for row in rows:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(row.run.outcomes().items(), key=lambda kv: -kv[1]))
        print(f"  {row.scenario}: rates in {row.unit} (overall, in the first and the second half of its wall time);"
              f" outcomes: {outcomes}")  # fmt: skip
    names = list(rows[0].cpu) if rows else []
    print(f"\nCPU seconds spent per scenario (the busiest process is the bottleneck)\n{'scenario':<34}"
          + "".join(f"{n:>14}" for n in names))  # fmt: skip
    for row in rows:
        print(f"{row.scenario:<34}" + "".join(f"{row.cpu.get(n, 0.0):>14.1f}" for n in names))


def print_memory(memory: dict[str, dict[str, int]]) -> None:
    print(f"\n{'process':<12}{'peak RSS (VmHWM)':>18}{'RSS now':>12}")
    for name, kib in memory.items():
        print(f"{name:<12}{kib.get('VmHWM', 0) / 1024:>14.1f} MiB{kib.get('VmRSS', 0) / 1024:>8.1f} MiB")


# ---- the run ---------------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> int:
    print(f"EventFlow benchmarks: {os.cpu_count()} cores, load average {load()} at start, "
          f"Python {platform.python_version()}, {platform.machine()}")  # fmt: skip
    print("(figures from a shared machine: compare them with the core count and load beside them)")
    cluster = Cluster(keep_logs=args.keep_logs)
    try:
        async with cluster:
            return await scenarios(cluster, args)
    except (RuntimeError, TimeoutError, grpc.aio.AioRpcError) as error:
        cluster.keep_logs = True
        print(f"\nbench could not run: {error}\n  dead processes: {cluster.dead() or 'none'}; logs in {cluster.logs}")
        return 2
    finally:
        if cluster.keep_logs:
            print(f"logs: {cluster.logs}")


async def purchase_scenario(cluster: Cluster, clients: Clients, args: argparse.Namespace) -> Row:
    """1. The purchase saga, with room for every buyer."""
    started = time.perf_counter()
    buyers = await create_usuarios(clients, args.buyers, 1)
    abierto = await create_evento(clients, "Bench: room for everyone", args.buyers)
    print(f"setup: {args.buyers} users, 1 event in {time.perf_counter() - started:.1f}s")
    row = await measure(cluster, f"purchase saga (c={args.concurrency})", "purchases/s",
                        purchases(clients, buyers, abierto.id), args.concurrency)  # fmt: skip
    run = row.run
    confirmed = sum(1 for r in run.ok if r.estado == CONFIRMADA)
    print(f"1. purchase saga: {confirmed} of {args.buyers} CONFIRMADA in {run.elapsed:.1f}s"
          f" ({run.rate:.1f} purchases/s: %.1f/s in the first half, %.1f/s in the second)" % run.halves())  # fmt: skip
    if confirmed < args.buyers:
        print(f"   note: {args.buyers - confirmed} purchase(s) not confirmed although there was room:"
              f" {dict(run.outcomes())}")  # fmt: skip
    return row


async def race_scenario(
    cluster: Cluster, clients: Clients, args: argparse.Namespace, earlier: Run
) -> tuple[Row, list[str]]:
    """2. The race for the last tickets; then everything settles and the invariants are checked (over both runs)."""
    racers = await create_usuarios(clients, args.race_buyers, args.buyers + 1)
    final = await create_evento(clients, "Bench: the last tickets", args.race_tickets)
    row = await measure(cluster, f"race {args.race_buyers}/{args.race_tickets} (c={args.race_concurrency})",
                        "answers/s", purchases(clients, racers, final.id), args.race_concurrency)  # fmt: skip
    race = row.run
    report, waited = await settle(cluster, clients, SETTLE_TIMEOUT)
    sold = sum(1 for r in report.reservas.values() if r.evento_id == final.id and r.estado is Estado.CONFIRMADA)
    evento = await clients.eventos.GetEvento(eventos_pb2.GetEventoRequest(id=final.id), timeout=DEADLINE)
    left = evento.entradas_disponibles
    oversold = max(0, sold - args.race_tickets)
    pending = sum(1 for r in report.reservas.values() if not r.settled)
    when = (f"{pending} still unsettled {waited:.0f}s later (checked as in flight)" if pending
            else f"settled {waited:.1f}s later (time to settle {race.elapsed + waited:.1f}s)")  # fmt: skip
    print(f"2. race: {args.race_buyers} buyers for {args.race_tickets} tickets answered in {race.elapsed:.1f}s, {when}")
    print("   answers: %.1f/s in the first half, %.1f/s in the second" % race.halves())
    print(f"   sold: {sold}   oversold: {oversold}   left in eventos: {left}   answered CONFIRMADA: {len(race.ok)}")
    if sold < args.race_tickets:
        print(f"   note: {args.race_tickets - sold} ticket(s) left: sagas that failed for another reason than"
              " SOLD_OUT gave them back after the last buyers had been refused")  # fmt: skip
    counts = Counter(str(r.estado) for r in report.reservas.values())
    print(f"   invariants over {len(report.reservas)} reservations ({dict(counts)}): "
          + ("all four hold" if not report.violations else f"{len(report.violations)} VIOLATIONS"))  # fmt: skip
    problems = report.violations + answered_but_not_stored(earlier, report) + answered_but_not_stored(race, report)
    if oversold:
        problems.append(f"race: {sold} tickets sold of {args.race_tickets}: oversold by {oversold}")
    return row, problems


async def entradas_scenario(cluster: Cluster, clients: Clients, args: argparse.Namespace) -> Row:
    """3. eventos' inventory RPC alone (run last: its allocations belong to no reservation)."""
    bulk = await create_evento(clients, "Bench: ReservarEntradas", args.entradas_calls)

    def take(reserva_id: str) -> Call:
        request = eventos_pb2.ReservarEntradasRequest(evento_id=bulk.id, reserva_id=reserva_id, cantidad=1)
        return lambda: clients.eventos.ReservarEntradas(request, timeout=DEADLINE)

    row = await measure(cluster, f"eventos ReservarEntradas (c={args.concurrency})", "calls/s",
                        [take(str(uuid.uuid4())) for _ in range(args.entradas_calls)], args.concurrency)  # fmt: skip
    print(f"3. ReservarEntradas alone: {row.run.rate:.1f} calls/s")
    return row


async def scenarios(cluster: Cluster, args: argparse.Namespace) -> int:
    print(f"stack: SecantusDB (:memory:) + redis-server + usuarios, eventos, reservas as processes ({cluster.logs})")
    channels = [grpc.aio.insecure_channel(cluster.address(n)) for n in ("usuarios", "eventos", "reservas")]
    clients = Clients(
        usuarios_pb2_grpc.UsuariosServiceStub(channels[0]),
        eventos_pb2_grpc.EventosServiceStub(channels[1]),
        reservas_pb2_grpc.ReservasServiceStub(channels[2]),
    )
    try:
        purchase = await purchase_scenario(cluster, clients, args)
        race, problems = await race_scenario(cluster, clients, args, purchase.run)
        entradas = await entradas_scenario(cluster, clients, args)
        print_table([purchase, race, entradas])
        print_memory(cluster.memory())
        print(f"\n{os.cpu_count()} cores, load average {load()} at the end")
    finally:
        for channel in channels:
            await channel.close()
    dead = cluster.dead()
    if dead:
        raise RuntimeError(f"processes died during the run: {', '.join(dead)}")
    if problems:
        cluster.keep_logs = True
        print(f"\nINVARIANTS BROKEN ({len(problems)}):", *problems[:50], sep="\n  ")
        return 1
    print("\ninvariants: all held (oversold: 0)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(bench(args))
    except KeyboardInterrupt:
        print("\ninterrupted: every process it started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
