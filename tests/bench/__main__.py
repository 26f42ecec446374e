"""`python -m tests.bench` (`make bench`): throughput, latency, cost and memory of the real system, printed.

One run, one machine, the figures of DESIGN.md's "shape of a fast purchase" side by side:
  0. the bare-store floor (floor.py) on a fresh pair of stores, at each number of purchases in flight;
then, against freshly started processes (see cluster.py), for this checkout and, with --baseline REV,
first for that revision's services too:
  1. MongoDB commands per confirmed purchase and per SOLD_OUT answer, on a quiet stack (commands.py);
  2. confirmed purchases/s, p50 and p99 at each number in flight (--in-flight, 1,16,64), and the
     ratio to the floor at each;
  3. SOLD_OUT answers/s for an event already sold out, at the largest number in flight;
  4. the race: --race-buyers buyers, --race-concurrency at a time, for --race-tickets tickets; then
     every reservation must settle and the four DESIGN.md invariants must hold (over 1 to 4);
  5. growth: purchases/s at 16 in flight over an event's first --growth-window reservations, against
     the same once it holds --growth-after of them (pre-filled by eventos' ReservarEntradas with
     synthetic reserva_ids; that event is kept out of the invariant check: it runs after it);
  6. eventos' ReservarEntradas on a --seated-seats seated event against a 100-seat one;
  7. peak RSS (VmHWM) of every process.
Each batch runs for at most --seconds (no call starts after that; those in flight finish), so a slow
and a fast system are measured by the same command. Prints a table, writes JSON (--json) and draws
a PNG chart (--chart; needs matplotlib, which `make bench` installs).
With MONGODB_URI / REDIS_URL set, no store is started: everything runs on those servers, in
databases (and, for the floor, under a key prefix) named for this run.
Exit status: 0 when every invariant held (however slow it was), 1 when one broke (the violations are
printed), 2 when a system could not be run (a process died or did not start: its log is kept).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from pymongo.errors import PyMongoError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from eventflow.eventos.v1 import eventos_pb2, eventos_pb2_grpc
from eventflow.reservas.v1 import reservas_pb2, reservas_pb2_grpc
from eventflow.usuarios.v1 import usuarios_pb2, usuarios_pb2_grpc
from tests.bench import commands, report
from tests.bench.cluster import RUN_ID, Cluster, Stores, describe_stores, memory_kib
from tests.bench.floor import SOLD_OUT, Floor
from tests.bench.load import Call, Run, Timed, poll_pending, pool
from tests.bench.report import Figures, Growth, Level, Results, Seated, level
from tests.bench.revision import Checked, Revision, check_invariants, checkout, current
from tests.callers import open_channel

CONFIRMADA = reservas_pb2.ESTADO_RESERVA_CONFIRMADA
DEADLINE = 120.0  # per call: generous, a loaded machine is slow, not wrong
SETTLE_TIMEOUT = 120.0
GROWTH_IN_FLIGHT = 16
SMALL_SEATED = 100


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--in-flight", default="1,16,64", help="purchases in flight, comma-separated (1,16,64)")
    add("--seconds", type=float, default=20.0, help="time budget of each measured batch, in seconds (20)")
    add("--max-calls", type=int, default=5000, help="calls of each measured batch at most (5000)")
    add("--usuarios", type=int, default=500, help="buyers, each buying in turn (500)")
    add("--commands-calls", type=int, default=20, help="sequential purchases (and SOLD_OUT answers) counted (20)")
    add("--race-buyers", type=int, default=2000, help="buyers racing for the tickets (2000)")
    add("--race-tickets", type=int, default=100, help="tickets they race for (100)")
    add("--race-concurrency", type=int, default=200, help="racing purchases in flight (200)")
    add("--growth-window", type=int, default=1000, help="purchases in each growth window (1000)")
    add("--growth-after", type=int, default=20000, help="reservations the event holds before the second (20000)")
    add("--growth-seconds", type=float, default=90.0, help="time budget of each growth window (90)")
    add("--prefill-seconds", type=float, default=600.0, help="time budget of the growth pre-fill (600)")
    add("--seated-seats", type=int, default=50000, help="seats of the large seated event (50000)")
    add("--seated-calls", type=int, default=20, help="ReservarEntradas calls on each seated event (20)")
    add("--baseline", metavar="REV", help="also run the system scenarios against the services of git revision REV")
    add("--json", type=Path, metavar="PATH", help="write every figure as JSON to PATH")
    add("--chart", type=Path, metavar="PATH", default=Path(".bench/bench.png"), help="PNG chart (.bench/bench.png)")
    add("--quick", action="store_true", help="a small run (a few minutes): every scenario scaled down")
    add("--keep-logs", action="store_true", help="keep the processes' logs (printed at the end)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.max_calls, args.usuarios = min(args.seconds, 5.0), min(args.max_calls, 1000), 100
        args.race_buyers, args.race_tickets, args.race_concurrency = 300, 30, min(args.race_concurrency, 50)
        args.growth_window, args.growth_after, args.growth_seconds = 100, 1000, min(args.growth_seconds, 15.0)
        args.prefill_seconds, args.seated_calls = min(args.prefill_seconds, 45.0), min(args.seated_calls, 5)
    try:
        args.in_flight = sorted({int(c) for c in args.in_flight.split(",")})
    except ValueError:
        parser.error("--in-flight takes numbers separated by commas, e.g. 1,16,64")
    for name in ("max_calls", "usuarios", "commands_calls", "race_buyers", "race_tickets", "race_concurrency",
                 "growth_window", "growth_after", "seated_seats", "seated_calls"):  # fmt: skip
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if min(args.in_flight) < 1 or args.seconds <= 0:
        parser.error("--in-flight and --seconds must be more than 0")
    return args


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> dict[str, object]:
    """What the figures depend on: cores, memory, CPU, Python, and how busy the machine was."""
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        total = next((int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:")), 0)
    model = ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next((line.partition(":")[2].strip() for line in cpuinfo if line.startswith("model name")), "")
    return {
        "cores": os.cpu_count(), "cpu": model, "memory_gib": round(total / 1024 / 1024, 1),
        "python": platform.python_version(), "platform": platform.platform(), "load_at_start": load(),
    }  # fmt: skip


@dataclass
class Row:
    """One line of the detail table, with the CPU seconds each process spent on it."""

    scenario: str
    run: Run
    unit: str
    cpu: dict[str, float]
    load_after: str = field(default_factory=load)


async def measure(
    cluster: Cluster, scenario: str, unit: str, calls: Sequence[Call], concurrency: int, seconds: float | None = None
) -> Row:
    before, client = cluster.cpu(), time.process_time()
    run = await pool(calls, concurrency, seconds)
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


async def create_evento(
    clients: Clients, nombre: str, aforo: int, asientos: Sequence[str] = ()
) -> eventos_pb2.Evento:
    evento = eventos_pb2.Evento(nombre=nombre, lugar="Antel Arena", aforo_total=0 if asientos else aforo,
                                precio=1500, moneda="UYU", asientos=list(asientos))  # fmt: skip
    evento.fecha.FromDatetime(datetime.now(UTC).replace(microsecond=0) + timedelta(days=60))
    return await clients.eventos.CreateEvento(eventos_pb2.CreateEventoRequest(evento=evento), timeout=DEADLINE)


def purchases(clients: Clients, usuarios: Sequence[str], evento_id: str, n: int | None = None) -> list[Call]:
    """`n` purchases of 1 ticket (one per buyer when None), the buyers taken in turn."""

    def buy(usuario_id: str) -> Call:
        request = reservas_pb2.ReservarRequest(
            usuario_id=usuario_id, evento_id=evento_id, cantidad=1, medio_pago="tok_visa",
            idempotency_key=uuid.uuid4().hex,
        )  # fmt: skip
        return lambda: clients.reservas.Reservar(request, timeout=DEADLINE)

    buyers = usuarios if n is None else list(itertools.islice(itertools.cycle(usuarios), n))
    return [buy(u) for u in buyers]


def takes(clients: Clients, evento_id: str, n: int, asientos: Sequence[str] = ()) -> list[Call]:
    """`n` eventos ReservarEntradas calls with synthetic reserva_ids: 1 ticket each, or seat i for call i."""

    def take(i: int) -> Call:
        request = eventos_pb2.ReservarEntradasRequest(
            evento_id=evento_id, reserva_id=f"bench-{uuid.uuid4().hex}", cantidad=1,
            asientos=[asientos[i]] if asientos else [],
        )  # fmt: skip
        return lambda: clients.eventos.ReservarEntradas(request, timeout=DEADLINE)

    return [take(i) for i in range(n)]


def confirmed(call: Timed) -> bool:
    return call.error is None and call.value.estado == CONFIRMADA


def sold_out(call: Timed) -> bool:
    return call.outcome == "FAILED_PRECONDITION/SOLD_OUT"


# ---- checking what is stored -----------------------------------------------------------------


async def settle(
    cluster: Cluster, clients: Clients, revision: Revision, timeout: float
) -> tuple[Checked, float, int]:
    """Wait until no reservation is PENDIENTE (recovery settles any whose call gave up), then check.

    Still unsettled after `timeout` is not a broken invariant (a saga may stay PENDIENTE up to the hold
    TTL, 600 s by default): then the check allows sagas in flight, and says how many there were.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        checked = await check_invariants(revision, cluster.mongo_uri, cluster.databases, allow_pending=True)
        unsettled = checked.unsettled()
        if not unsettled or loop.time() - started > timeout:
            break
        await poll_pending(clients.reservas, unsettled, until=started + timeout)
    waited = loop.time() - started
    if unsettled:
        return checked, waited, len(unsettled)
    return await check_invariants(revision, cluster.mongo_uri, cluster.databases), waited, 0


def answered_but_not_stored(run: Run, checked: Checked) -> list[str]:
    """A buyer told CONFIRMADA whose reservation is not CONFIRMADA in the log: a lie to a customer."""
    wrong = []
    for reserva in run.ok:
        stored = checked.estado(reserva.id)
        if reserva.estado == CONFIRMADA and stored != "CONFIRMADA":
            wrong.append(f"reservation {reserva.id} was answered CONFIRMADA but is {stored or 'missing'}")
    return wrong


# ---- printing --------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def print_table(rows: list[Row]) -> None:
    print(f"\n{'scenario':<40}{'calls':>6}{'wall s':>8}{'rate/s':>8}{'1st half':>9}{'2nd half':>9}{'p50 ms':>8}"
          f"{'p95 ms':>8}{'p99 ms':>8}{'max ms':>8}  load after")  # fmt: skip
    for row in rows:
        p = row.run.percentiles()
        first, second = row.run.halves()
        latencies = "".join(f"{ms(p[k]):>8}" for k in ("p50", "p95", "p99", "max"))
        print(f"{row.scenario:<40}{len(row.run.calls):>6}{row.run.elapsed:>8.1f}{row.run.rate:>8.1f}{first:>9.1f}"
              f"{second:>9.1f}{latencies}  {row.load_after}")  # fmt: skip
    for row in rows:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(row.run.outcomes().items(), key=lambda kv: -kv[1]))
        print(f"  {row.scenario}: rates in {row.unit} (overall, in the first and the second half of its wall time);"
              f" outcomes: {outcomes}")  # fmt: skip
    names = list(rows[0].cpu) if rows else []
    print(f"\nCPU seconds spent per scenario (the busiest process is the bottleneck)\n{'scenario':<40}"
          + "".join(f"{n:>14}" for n in names))  # fmt: skip
    for row in rows:
        print(f"{row.scenario:<40}" + "".join(f"{row.cpu.get(n, 0.0):>14.1f}" for n in names))


def print_memory(memory: dict[str, dict[str, int]]) -> None:
    print(f"\n{'process':<16}{'peak RSS (VmHWM)':>18}{'RSS now':>12}")
    for name, kib in memory.items():
        print(f"{name:<16}{kib.get('VmHWM', 0) / 1024:>14.1f} MiB{kib.get('VmRSS', 0) / 1024:>8.1f} MiB")


# ---- 0. the floor ----------------------------------------------------------------------------


async def floor_scenario(args: argparse.Namespace, results: Results) -> None:
    """The bare-store floor at each number in flight, each on a fresh pair of stores (or in a database of
    its own on yours): SecantusDB slows as its collections fill, so no level pays for the one before."""
    for c in args.in_flight:
        logs = Path(tempfile.mkdtemp(prefix="eventflow-bench-floor-"))
        stores = Stores(logs, f"floor{c}")
        try:
            await stores.start()
            results.floor[c] = await floor_level(stores, args, c)
            for name, process in stores.processes.items():
                if process.running and process.proc:
                    results.floor_memory_kib[f"floor {name} ({c})"] = memory_kib(process.proc.pid)
        finally:
            await asyncio.to_thread(stores.stop)
            shutil.rmtree(logs, ignore_errors=True)
        lv = results.floor[c]
        print(f"0. floor, {c} in flight: {lv.rate:.1f} reservations/s, p50 {ms(lv.p50)} ms, p99 {ms(lv.p99)} ms"
              f" ({lv.calls} calls)")  # fmt: skip


async def floor_level(stores: Stores, args: argparse.Namespace, c: int) -> Level:
    mongo, redis = stores.mongo(), Redis.from_url(stores.redis_url)
    prefix = f"bench_{RUN_ID}:{stores.name}:" if stores.external["redis"] else "floor:"
    floor = Floor(mongo, redis, stores.database("data"), prefix)
    try:
        usuarios = await floor.create_usuarios(args.usuarios)
        evento_id = await floor.create_evento(args.max_calls)
        run = await pool(itertools.islice(floor.purchases(usuarios, evento_id), args.max_calls), c, args.seconds)
        if stores.external["mongodb"] or stores.external["redis"]:
            await floor.drop()
        return level(run, c, lambda t: t.error is None and t.value != SOLD_OUT)
    finally:
        await mongo.close()
        await redis.aclose()


# ---- 1 to 7. the system ----------------------------------------------------------------------


@dataclass
class Scene:
    """One system under test, and what its scenarios share."""

    cluster: Cluster
    clients: Clients
    revision: Revision
    args: argparse.Namespace
    figures: Figures
    counter: commands.Counter
    idle: dict[str, float] = field(default_factory=dict)  # commands/s of each kind the stack sends when idle
    usuarios: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    answered: list[Run] = field(default_factory=list)  # purchases whose answers are checked against the log

    async def quiet(self, before: str) -> None:
        """Before a measured batch: until the background work of the previous one (projections, recovery) is
        done, so each batch is measured on a stack at rest, whatever ran before it."""
        _, _, quiet = await self.counter.quiet(self.idle, limit=60.0)
        if not quiet:
            print(f"   note: the stack was still busy 60s after the previous batch when {before} started")


async def commands_scenario(scene: Scene) -> None:
    """1. MongoDB commands per confirmed purchase and per SOLD_OUT answer, on a quiet stack."""
    clients, n = scene.clients, scene.args.commands_calls
    abierto = await create_evento(clients, "Bench: commands", n)
    agotado = await create_evento(clients, "Bench: sold out", 1)
    sell = await pool(purchases(clients, scene.usuarios[:1], agotado.id), 1)
    if not sell.ok:
        raise RuntimeError(f"could not sell the last ticket of the sold-out event: {sell.outcomes()}")
    scene.answered.append(sell)
    per_reading = await scene.counter.calibrate()
    await asyncio.sleep(2.0)  # that sale's background work (its projection) has passed
    idle = scene.idle = await scene.counter.idle(3.0 if scene.args.quick else 6.0)
    runs: dict[str, Run] = {}
    counts: dict[str, commands.Count] = {}
    for key, evento_id in (("purchase", abierto.id), ("sold_out", agotado.id)):
        calls = purchases(clients, scene.usuarios, evento_id, n)

        async def one_at_a_time(key: str = key, calls: list[Call] = calls) -> None:
            runs[key] = await pool(calls, 1)

        counts[key] = await scene.counter.around(n, one_at_a_time, idle)
    scene.answered += runs.values()
    good = {"purchase": sum(1 for t in runs["purchase"].calls if confirmed(t)),
            "sold_out": sum(1 for t in runs["sold_out"].calls if sold_out(t))}  # fmt: skip
    for key, count in counts.items():
        scene.figures.commands[key] = {**count.as_json(), "answered_as_expected": good[key]}
    idle_total = sum(idle.values())
    print(f"1. MongoDB commands (serverStatus opcounters insert+query+update+delete+command, getMore left out;"
          f" each reading adds {per_reading}, subtracted; idle stack: {idle_total:.1f}/s)")  # fmt: skip
    for key, count in counts.items():
        kinds = ", ".join(f"{v:.1f} {k}" for k, v in count.per_call_by_kind().items())
        print(f"   per {'confirmed purchase' if key == 'purchase' else 'SOLD_OUT answer'}: {count.per_call:.1f}"
              f" ({kinds}) over {n} sequential calls and {count.seconds:.1f}s, background work included"
              f" (projector, recovery scans; an idle stack would have sent {count.idle_per_call:.1f} per call)")  # fmt: skip
        if good[key] != n:
            print(f"   note: only {good[key]} of {n} were {key.replace('_', ' ')} answers: {dict(runs[key].outcomes())}")


async def purchases_scenario(scene: Scene) -> None:
    """2. Confirmed purchases/s at each number in flight, each level on a fresh event with room for all."""
    args = scene.args
    for c in args.in_flight:
        evento = await create_evento(scene.clients, f"Bench: {c} in flight", args.max_calls)
        await scene.quiet(f"purchases at {c} in flight")
        row = await measure(scene.cluster, f"purchases (c={c})", "purchases/s",
                            purchases(scene.clients, scene.usuarios, evento.id, args.max_calls), c,
                            args.seconds)  # fmt: skip
        scene.rows.append(row)
        scene.answered.append(row.run)
        lv = scene.figures.purchases[c] = level(row.run, c, confirmed)
        print(f"2. purchases, {c} in flight: {lv.counted} of {lv.calls} CONFIRMADA in {lv.seconds:.1f}s:"
              f" {lv.rate:.1f}/s, p50 {ms(lv.p50)} ms, p99 {ms(lv.p99)} ms")  # fmt: skip


async def sold_out_scenario(scene: Scene) -> None:
    """3. SOLD_OUT answers/s for an event already sold out, at the largest number in flight."""
    args, c = scene.args, max(scene.args.in_flight)
    agotado = await create_evento(scene.clients, "Bench: already sold out", 1)
    sell = await pool(purchases(scene.clients, scene.usuarios[:1], agotado.id), 1)
    scene.answered.append(sell)
    await scene.quiet("SOLD_OUT answers")
    row = await measure(scene.cluster, f"SOLD_OUT answers (c={c})", "answers/s",
                        purchases(scene.clients, scene.usuarios, agotado.id, args.max_calls), c,
                        args.seconds)  # fmt: skip
    scene.rows.append(row)
    scene.answered.append(row.run)
    lv = scene.figures.sold_out = level(row.run, c, sold_out)
    print(f"3. SOLD_OUT, {c} in flight: {lv.rate:.1f} answers/s ({lv.counted} of {lv.calls}),"
          f" p50 {ms(lv.p50)} ms, p99 {ms(lv.p99)} ms")  # fmt: skip


async def race_scenario(scene: Scene) -> tuple[Run, str]:
    """4. The race for the last tickets (checked, with everything before it, by check_scenario)."""
    args = scene.args
    racers = await create_usuarios(scene.clients, args.race_buyers, args.usuarios + 1)
    final = await create_evento(scene.clients, "Bench: the last tickets", args.race_tickets)
    await scene.quiet("the race")
    row = await measure(scene.cluster, f"race {args.race_buyers}/{args.race_tickets} (c={args.race_concurrency})",
                        "answers/s", purchases(scene.clients, racers, final.id),
                        args.race_concurrency)  # fmt: skip
    scene.rows.append(row)
    scene.answered.append(row.run)
    print(f"4. race: {args.race_buyers} buyers for {args.race_tickets} tickets answered in {row.run.elapsed:.1f}s")
    print("   answers: %.1f/s in the first half, %.1f/s in the second" % row.run.halves())
    return row.run, final.id


async def check_scenario(scene: Scene, race: Run, final_id: str) -> list[str]:
    """Everything so far settles; the revision's own check of the four invariants; the race's tally."""
    args = scene.args
    checked, waited, pending = await settle(scene.cluster, scene.clients, scene.revision, SETTLE_TIMEOUT)
    sold = sum(1 for e, estado, _ in checked.reservas.values() if e == final_id and estado == "CONFIRMADA")
    evento = await scene.clients.eventos.GetEvento(eventos_pb2.GetEventoRequest(id=final_id), timeout=DEADLINE)
    oversold = max(0, sold - args.race_tickets)
    when = (f"{pending} still unsettled {waited:.0f}s later (checked as in flight)" if pending
            else f"settled {waited:.1f}s later (time to settle {race.elapsed + waited:.1f}s)")  # fmt: skip
    print(f"   {when}; sold: {sold}   oversold: {oversold}   left in eventos: {evento.entradas_disponibles}"
          f"   answered CONFIRMADA: {len(race.ok)}")  # fmt: skip
    if sold < args.race_tickets:
        print(f"   note: {args.race_tickets - sold} ticket(s) left: sagas that failed for another reason than"
              " SOLD_OUT gave them back after the last buyers had been refused")  # fmt: skip
    counts = Counter(estado for _, estado, _ in checked.reservas.values())
    print(f"   invariants over {len(checked.reservas)} reservations ({dict(counts)}): "
          + ("all four hold" if not checked.violations else f"{len(checked.violations)} VIOLATIONS"))  # fmt: skip
    scene.figures.race = {
        "buyers": args.race_buyers, "tickets": args.race_tickets, "in_flight": args.race_concurrency,
        "answers_per_second": race.rate, "seconds": race.elapsed, "settle_seconds": waited, "unsettled": pending,
        "sold": sold, "oversold": oversold, "left": evento.entradas_disponibles,
    }  # fmt: skip
    problems = list(checked.violations)
    for run in scene.answered:
        problems += answered_but_not_stored(run, checked)
    if oversold:
        problems.append(f"race: {sold} tickets sold of {args.race_tickets}: oversold by {oversold}")
    scene.figures.violations = problems
    return problems


async def growth_scenario(scene: Scene) -> None:
    """5. Purchases/s over an event's first reservations, and again after it holds many (out of the check)."""
    args, clients = scene.args, scene.clients
    window, target = args.growth_window, args.growth_after
    evento = await create_evento(clients, "Bench: growth", target + 2 * window)
    await scene.quiet("the growth scenario")
    first = await measure(scene.cluster, f"growth: first {window} (c={GROWTH_IN_FLIGHT})", "purchases/s",
                          purchases(clients, scene.usuarios, evento.id, window), GROWTH_IN_FLIGHT,
                          args.growth_seconds)  # fmt: skip
    held = sum(1 for t in first.run.calls if confirmed(t))
    print(f"5. growth: first {len(first.run.calls)} purchases: {held / first.run.elapsed:.1f}/s;"
          f" pre-filling to {target:,} reservations (eventos ReservarEntradas, synthetic reserva_ids,"
          f" {GROWTH_IN_FLIGHT} in flight, at most {args.prefill_seconds:.0f}s)")  # fmt: skip
    prefill = await measure(scene.cluster, f"growth pre-fill: ReservarEntradas (c={GROWTH_IN_FLIGHT})", "calls/s",
                            takes(clients, evento.id, max(0, target - held)), GROWTH_IN_FLIGHT,
                            args.prefill_seconds)  # fmt: skip
    held += len(prefill.run.ok)
    await scene.quiet("the growth scenario's second window")
    after = await measure(scene.cluster, f"growth: after {held} (c={GROWTH_IN_FLIGHT})", "purchases/s",
                          purchases(clients, scene.usuarios, evento.id, window), GROWTH_IN_FLIGHT,
                          args.growth_seconds)  # fmt: skip
    scene.rows += [first, prefill, after]
    growth = scene.figures.growth = Growth(
        window, level(first.run, GROWTH_IN_FLIGHT, confirmed), level(after.run, GROWTH_IN_FLIGHT, confirmed), held,
        target, "eventos ReservarEntradas with synthetic reserva_ids", prefill.run.elapsed,
    )  # fmt: skip
    print(f"   pre-filled {len(prefill.run.ok):,} in {prefill.run.elapsed:.0f}s ({prefill.run.rate:.1f} calls/s);"
          f" after {held:,}: {growth.after.rate:.1f} purchases/s ({growth.ratio:.2f}x the first window)")  # fmt: skip


async def seated_scenario(scene: Scene) -> None:
    """6. ReservarEntradas, one seat per call, on a large seated event against a small one (out of the check)."""
    args, clients = scene.args, scene.clients
    levels: dict[int, Level] = {}
    for seats in (SMALL_SEATED, args.seated_seats):
        labels = [f"S-{i:06d}" for i in range(seats)]
        started = time.perf_counter()
        evento = await create_evento(clients, f"Bench: {seats} seats", seats, labels)
        created = time.perf_counter() - started
        await scene.quiet(f"ReservarEntradas on {seats} seats")
        row = await measure(scene.cluster, f"ReservarEntradas, {seats} seats (c=1)", "calls/s",
                            takes(clients, evento.id, min(args.seated_calls, seats), labels), 1)  # fmt: skip
        scene.rows.append(row)
        levels[seats] = level(row.run, 1)
        print(f"6. ReservarEntradas on a {seats:,}-seat event (created in {created:.1f}s): p50 {ms(levels[seats].p50)} ms"
              f" over {levels[seats].calls} calls ({dict(row.run.outcomes())})")  # fmt: skip
    scene.figures.seated = Seated(SMALL_SEATED, args.seated_seats, levels[SMALL_SEATED], levels[args.seated_seats])


async def system(revision: Revision, args: argparse.Namespace, results: Results) -> int:
    """Scenarios 1 to 7 against the services of `revision`: 0, 1 (an invariant broke) or 2 (could not run)."""
    figures = Figures(revision.label, revision.commit)
    results.systems.append(figures)
    cluster = Cluster(keep_logs=args.keep_logs, code=revision.path, name="baseline" if revision.path else "current")
    print(f"\n== {revision.label} ({revision.commit}): {describe_stores()} + usuarios, eventos, reservas"
          f" as processes ({cluster.logs})")  # fmt: skip
    try:
        async with cluster:
            problems = await scenarios(cluster, revision, args, figures)
    except (RuntimeError, TimeoutError, grpc.aio.AioRpcError, PyMongoError, RedisError) as error:
        cluster.keep_logs = True
        print(f"\n{revision.label} could not run: {error!r}\n  dead processes: {cluster.died or 'none'};"
              f" logs in {cluster.logs}")  # fmt: skip
        return 2
    finally:
        if cluster.keep_logs:
            print(f"logs: {cluster.logs}")
    if problems:
        cluster.keep_logs = True
        print(f"\n{revision.label}: INVARIANTS BROKEN ({len(problems)}):", *problems[:50], sep="\n  ")
        return 1
    print(f"\n{revision.label}: invariants all held (oversold: 0)")
    return 0


async def scenarios(cluster: Cluster, revision: Revision, args: argparse.Namespace, figures: Figures) -> list[str]:
    # As admin (as servicio where only reservas may call): the bench measures purchases, not who may buy.
    channels = [open_channel(cluster.address(n)) for n in ("usuarios", "eventos", "reservas")]
    clients = Clients(
        usuarios_pb2_grpc.UsuariosServiceStub(channels[0]),
        eventos_pb2_grpc.EventosServiceStub(channels[1]),
        reservas_pb2_grpc.ReservasServiceStub(channels[2]),
    )
    mongo = cluster.mongo()
    scene = Scene(cluster, clients, revision, args, figures, commands.Counter(mongo))
    try:
        started = time.perf_counter()
        scene.usuarios = await create_usuarios(clients, args.usuarios, 1)
        print(f"setup: {args.usuarios} users in {time.perf_counter() - started:.1f}s")
        await commands_scenario(scene)
        await purchases_scenario(scene)
        await sold_out_scenario(scene)
        race, final_id = await race_scenario(scene)
        problems = await check_scenario(scene, race, final_id)
        await growth_scenario(scene)
        await seated_scenario(scene)
        figures.memory_kib = cluster.memory()
        print_table(scene.rows)
        print_memory(figures.memory_kib)
    finally:
        await mongo.close()
        for channel in channels:
            await channel.close()
    dead = cluster.dead()
    if dead:
        raise RuntimeError(f"processes died during the run: {', '.join(dead)}")
    return problems


# ---- the run ---------------------------------------------------------------------------------


def print_results(results: Results) -> None:
    print(f"\n==== figures ({results.machine['cores']} cores, load average {load()} at the end;"
          f" stores: {results.stores}) ====\n")  # fmt: skip
    print("\n".join(report.floor_lines(results)))
    print()
    print("\n".join(report.figures_lines(results)))
    if results.floor_memory_kib:
        print("floor stores' peak RSS: " + ", ".join(f"{n} {k.get('VmHWM', 0) / 1024:.0f} MiB"
                                                    for n, k in results.floor_memory_kib.items()))  # fmt: skip
    print("MongoDB commands: serverStatus opcounters (insert+query+update+delete+command, getMore left out),"
          " summed over the three services,\n  background work included (the read-model projector, recovery"
          " scans); the benchmark's own readings subtracted.")  # fmt: skip


async def bench(args: argparse.Namespace, argv: Sequence[str]) -> int:
    info = machine()
    print(f"EventFlow benchmarks: {info['cores']} cores ({info['cpu'] or platform.machine()}), {info['memory_gib']} GiB,"
          f" load average {load()} at start, Python {platform.python_version()}")  # fmt: skip
    print("(figures from a shared machine: compare them with the core count and load beside them)")
    results = Results(info, shlex.join(["python", "-m", "tests.bench", *argv]), describe_stores())
    status = 0
    try:
        await floor_scenario(args, results)
    except (RuntimeError, TimeoutError, PyMongoError, RedisError) as error:
        print(f"\nthe floor could not run: {error}")
        return 2
    this = current()
    if args.baseline:
        try:
            with checkout(args.baseline) as baseline:
                status = max(status, await system(baseline, args, results))
        except (OSError, subprocess.CalledProcessError) as error:
            print(f"\nthe baseline could not be checked out: {getattr(error, 'stderr', '') or error}")
            status = 2
    status = max(status, await system(this, args, results))
    results.machine["load_at_end"] = load()
    print_results(results)
    if args.json:
        report.write_json(results, args.json)
        print(f"json: {args.json}")
    print(report.draw_chart(results, args.chart))
    return status


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        return asyncio.run(bench(args, argv))
    except KeyboardInterrupt:
        print("\ninterrupted: every process it started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
