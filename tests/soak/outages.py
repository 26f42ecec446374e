"""Outages under load (issue 9): one process of the stack killed with -9 while purchases are in flight, then
started again on the same port with the same data; the system must heal by itself.

The stack is `tests.bench.cluster.Cluster` with persistent stores: SecantusDB, redis-server and the three
services as separate processes, as `eventflow up` runs them. `run_outage` creates the buyers and two events
(one unseated, one seated with fewer seats than buyers want), sends every purchase at once, kills the named
process once a quarter of them have started, starts it again after `down` seconds and then checks what the
issue asks for:

- every call was answered, none with INTERNAL or UNKNOWN, and every OK names a CONFIRMADA reservation;
- every reservation is CONFIRMADA, FALLIDA or CANCELADA within `settle_within` seconds of the process being
  back, and the four DESIGN.md invariants hold (so nobody is charged without a confirmed reservation);
- the three services report SERVING again, nobody restarted them;
- a retry of every purchase with its idempotency key answers the settled outcome: the same reservation, the
  same refusal, or (for a purchase undone because something was down, or never recorded) a new attempt.

It returns the figures of the run (what callers saw, how long settling took) for the issue's closing note.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pymongo import AsyncMongoClient

from eventflow.eventos.v1 import eventos_pb2, eventos_pb2_grpc
from eventflow.reservas.v1 import reservas_pb2, reservas_pb2_grpc
from eventflow.usuarios.v1 import usuarios_pb2, usuarios_pb2_grpc
from infra.errors import error_info
from reservas.domain import Estado, Reserva
from reservas.service import retryable
from tests.bench.cluster import SERVICES, Cluster
from tests.bench.load import TRANSIENT_CODES, expected, outcome
from tests.callers import RECONNECT, open_channel
from tests.reservas.invariants import Report, check_invariants, find_violations, one_purchase_per_key
#: The purchases, by position: mostly approved, some slow (so purchases are in flight when the process dies),
#: one in ten declined; three in ten for one seat of the seated event.
TOKENS = ["tok_visa", "tok_slow", "tok_visa", "tok_visa", "tok_slow", "tok_visa", "tok_declined", "tok_visa", "tok_slow", "tok_visa"]
SEATS = [f"{row}-{n}" for row in "ABCD" for n in range(1, 11)]
#: The deployment's own settings (leases, recovery, timeouts), except a payment that takes long enough to be caught.
RESERVAS_ENV = {"EVENTFLOW_PAYMENT_SLOW_SECONDS": "2"}


@dataclass
class Figures:
    """What one outage did: the callers' answers, and how long the system took to heal."""

    fault: str
    down: float
    purchases: int
    answers: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    estados: Counter[str] = field(default_factory=Counter)
    #: Seconds from the process being back to: every call answered, every reservation settled, all SERVING.
    answered: float = 0.0
    settled: float = 0.0
    serving: float = 0.0

    def __str__(self) -> str:
        return (
            f"{self.fault} killed -9, back after {self.down:g}s, {self.purchases} purchases in flight: "
            f"answers {dict(self.answers.most_common())}; once back: all answered in {self.answered:.1f}s, "
            f"all settled in {self.settled:.1f}s ({dict(self.estados.most_common())}), all SERVING in "
            f"{self.serving:.1f}s; retries with the same keys {dict(self.retries.most_common())}"
        )


@dataclass
class Purchase:
    request: reservas_pb2.ReservarRequest
    answer: str = ""
    reserva_id: str = ""


class Stack:
    """The cluster's stubs, and its databases read directly."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.channels = {name: open_channel(cluster.address(name), options=RECONNECT) for name in SERVICES}
        self.usuarios = usuarios_pb2_grpc.UsuariosServiceStub(self.channels["usuarios"])
        self.eventos = eventos_pb2_grpc.EventosServiceStub(self.channels["eventos"])
        self.reservas = reservas_pb2_grpc.ReservasServiceStub(self.channels["reservas"])
        self.mongo: AsyncMongoClient = cluster.mongo()

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()
        await self.mongo.close()

    async def buyers(self, n: int) -> list[str]:
        async def one(i: int) -> str:
            usuario = usuarios_pb2.Usuario(
                tipo_documento="CI", nro_documento=f"{uuid.uuid4().int % 10**8:08d}", nombre="Ana", apellido="Pérez",
                email=f"outage{i}.{uuid.uuid4().hex[:8]}@example.com",
            )  # fmt: skip
            return (await self.usuarios.CreateUsuario(usuarios_pb2.CreateUsuarioRequest(usuario=usuario), timeout=30)).id

        made: list[str] = []
        while len(made) < n:
            made += await asyncio.gather(*(one(len(made) + i) for i in range(min(50, n - len(made)))))
        return made

    async def evento(self, aforo: int = 0, asientos: list[str] | None = None) -> str:
        evento = eventos_pb2.Evento(
            nombre="Concierto", lugar="Antel Arena", aforo_total=aforo, precio=1500, moneda="UYU", asientos=asientos or []
        )
        evento.fecha.FromDatetime(datetime.now(UTC).replace(microsecond=0) + timedelta(days=30))
        return (await self.eventos.CreateEvento(eventos_pb2.CreateEventoRequest(evento=evento), timeout=30)).id

    def databases(self) -> dict[str, str]:
        return {f"{name}_db": self.cluster.databases[name] for name in SERVICES}

    async def report(self, allow_pending: bool) -> Report:
        if allow_pending:
            return await find_violations(self.mongo, allow_pending=True, **self.databases())
        return await check_invariants(self.mongo, **self.databases())

    async def started(self, eventos: list[str]) -> int:
        """Purchases of these events that reached reservas' log (their first event)."""
        events = self.mongo[self.cluster.databases["reservas"]]["reserva_eventos"]
        return await events.count_documents({"version": 1, "datos.evento_id": {"$in": eventos}})

    async def all_serving(self) -> bool:
        for name in SERVICES:
            stub = health_pb2_grpc.HealthStub(self.channels[name])
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
            except grpc.aio.AioRpcError:
                return False
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                return False
        return True


def requests(buyers: list[str], general: str, platea: str) -> list[reservas_pb2.ReservarRequest]:
    made = []
    for i, usuario in enumerate(buyers):
        seated = i % 10 in (2, 5, 8)
        made.append(
            reservas_pb2.ReservarRequest(
                usuario_id=usuario,
                evento_id=platea if seated else general,
                cantidad=1 if seated else 1 + i % 2,
                asientos=[SEATS[i % len(SEATS)]] if seated else [],
                medio_pago=TOKENS[i % len(TOKENS)],
                idempotency_key=f"outage-{i}-{uuid.uuid4().hex[:8]}",
            )
        )
    return made


async def buy(stub: reservas_pb2_grpc.ReservasServiceStub, purchase: Purchase, timeout: float = 120) -> str:
    """Send the purchase; its answer as OK or CODE/REASON (and the reservation it names, if any)."""
    try:
        reply = await stub.Reservar(purchase.request, timeout=timeout)
    except grpc.aio.AioRpcError as error:
        info = error_info(error)
        purchase.reserva_id = info.metadata.get("reserva_id", "") if info else ""
        return outcome(error)
    purchase.reserva_id = reply.id
    return "OK" if reply.estado == reservas_pb2.ESTADO_RESERVA_CONFIRMADA else f"OK/{reply.estado}"


async def until(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"{what} within {timeout:g}s")
        await asyncio.sleep(0.2)


def unexpected(answers: Counter[str]) -> dict[str, int]:
    return {answer: n for answer, n in answers.items() if not expected(answer)}


async def run_outage(
    cluster: Cluster, fault: str, *, purchases: int, down: float, settle_within: float = 60.0
) -> Figures:
    """Kill `fault` (a store or a service of the cluster) with -9 mid-purchase, start it again after `down` s."""
    stack = Stack(cluster)
    figures = Figures(fault, down, purchases)
    try:
        buyers = await stack.buyers(purchases)
        general = await stack.evento(aforo=2 * purchases)
        platea = await stack.evento(asientos=SEATS)
        sent = [Purchase(r) for r in requests(buyers, general, platea)]

        async def first(purchase: Purchase) -> None:
            purchase.answer = await buy(stack.reservas, purchase)

        calls = [asyncio.create_task(first(p)) for p in sent]
        await until(lambda: _at_least(stack, [general, platea], purchases // 4), 60, "a quarter did not start")
        cluster.kill(fault)
        killed = time.monotonic()
        in_flight = sum(not c.done() for c in calls)
        await asyncio.sleep(down)  # the outage itself: nothing to wait for
        await cluster.restart(fault)
        back = time.monotonic()
        print(f"\n{fault} killed with {in_flight} calls in flight, back after {back - killed:.1f}s")

        await asyncio.wait(calls, timeout=150)
        assert all(c.done() for c in calls), f"{sum(not c.done() for c in calls)} calls never answered"
        figures.answered = max(0.0, time.monotonic() - back)
        figures.answers.update(p.answer for p in sent)
        await until(lambda: _settled(stack), settle_within - (time.monotonic() - back), "not every reservation settled")
        figures.settled = time.monotonic() - back
        await until(stack.all_serving, settle_within, "the services did not all report SERVING")
        figures.serving = time.monotonic() - back
        report = await stack.report(allow_pending=False)
        keys = {p.request.idempotency_key for p in sent}
        figures.estados.update(str(r.estado) for r in report.reservas.values() if r.idempotency_key in keys)
        check_answers(sent, report)

        # Everything is back: the same requests again, with the same keys.
        for purchase, retry in zip(sent, await asyncio.gather(*(_retry(stack, p) for p in sent)), strict=True):
            figures.retries[retry.answer] += 1
            check_retry(purchase, retry, report)
        await until(lambda: _settled(stack), settle_within, "the retries did not settle")
        one_purchase_per_key(await stack.report(allow_pending=False))
        print(figures)
        return figures
    finally:
        await stack.close()


async def _at_least(stack: Stack, eventos: list[str], n: int) -> bool:
    return await stack.started(eventos) >= n


async def _settled(stack: Stack) -> bool:
    report = await stack.report(allow_pending=True)
    return all(r.settled for r in report.reservas.values())


async def _retry(stack: Stack, purchase: Purchase) -> Purchase:
    again = Purchase(purchase.request)
    again.answer = await buy(stack.reservas, again, timeout=60)
    return again


def _key_holder(purchase: Purchase, report: Report) -> Reserva | None:
    """The reservation the purchase's key stands for for good: None if it has none, or only attempts that an
    outage failed (FALLIDA, UNAVAILABLE), which a retry replaces with a new attempt."""
    mine = [
        r for r in report.reservas.values()
        if r.usuario_id == purchase.request.usuario_id and r.idempotency_key == purchase.request.idempotency_key
    ]  # fmt: skip
    settled_for_good = [r for r in mine if not retryable(r)]
    return settled_for_good[0] if settled_for_good else None


def check_answers(sent: list[Purchase], report: Report) -> None:
    """No INTERNAL or UNKNOWN (or any answer but OK, a refusal or 'not now'); every OK is CONFIRMADA; every
    reserva_id an error gives was recorded."""
    answers = Counter(p.answer for p in sent)
    assert not unexpected(answers), f"unexpected answers: {unexpected(answers)} (all: {dict(answers)})"
    for p in sent:
        if p.answer == "OK":
            stored = report.reservas.get(p.reserva_id)
            assert stored is not None and stored.estado is Estado.CONFIRMADA, (p.reserva_id, stored)
        elif p.reserva_id:  # an error that names a reservation names one GetReserva finds (issue 9 §4)
            assert p.reserva_id in report.reservas, f"{p.answer} names {p.reserva_id}, which was never recorded"


def check_retry(purchase: Purchase, retry: Purchase, report: Report) -> None:
    """The retry answers what the first attempt settled as; only an outage's failure (or nothing recorded) buys anew."""
    assert not unexpected(Counter([retry.answer])), (purchase.answer, retry.answer)
    assert retry.answer.partition("/")[0] not in TRANSIENT_CODES, f"a retry after the outage got {retry.answer}"
    holder = _key_holder(purchase, report)
    if holder is None:  # never recorded, or failed only because something was down: a new attempt
        return
    if holder.estado is Estado.CONFIRMADA:
        assert (retry.answer, retry.reserva_id) == ("OK", holder.id), (holder.id, retry)
    else:
        assert retry.answer == f"FAILED_PRECONDITION/{holder.razon}", (holder.id, holder.estado, holder.razon, retry)
        assert retry.reserva_id == holder.id
