"""Helpers for the projections tests: writing streams as the saga does, and what the read models
must hold, computed straight from the event store (independently of the projector's code)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from infra.limits import DEFAULT_MAX_MESSAGE_BYTES, ReplyBudget
from infra.mongo import create_client
from infra.pagination import PageTokens

from reservas.domain import Estado, Reserva, Tipo
from reservas.event_store import EventStore
from reservas.mapping import reserva_to_pb
from reservas.projections.checkpoint import Checkpoints
from reservas.projections.projector import Projector, ProjectorTask
from reservas.projections.queries import ReservasQueries
from reservas.projections.read_models import ReadModels, reserva_from_view
from reservas.projections.source import StreamSource

PRECIO = 1500

#: The page tokens and the byte budget of the read side's answers, as a server makes them.
TOKENS = PageTokens(b"projections-test-page-token-key!")
BUDGET = ReplyBudget.of_messages(DEFAULT_MAX_MESSAGE_BYTES, reserva_to_pb)


def queries_of(db: AsyncDatabase) -> ReservasQueries:
    return ReservasQueries(db, TOKENS, BUDGET)


@pytest.fixture
async def db(mongo_uri: str, db_name: Callable[[str], str]) -> AsyncIterator[AsyncDatabase]:
    """Reservas' database for one test, with the event store's indexes. Not dropped afterwards (as in
    conftest's `world`): the name is unique in the session's ephemeral server, and SecantusDB's
    dropDatabase can deadlock against a write transaction a killed projector left open."""
    client = create_client(mongo_uri, "test-projections")
    database = client[db_name("reservas")]
    await EventStore(database).ensure_indexes()
    yield database
    await client.close()


@pytest.fixture
def store(db: AsyncDatabase) -> EventStore:
    return EventStore(db)


@contextlib.asynccontextmanager
async def running(db: AsyncDatabase, **options: Any) -> AsyncIterator[Projector]:
    """A projector task on `db` for the duration of the block (polls every 100ms unless told)."""
    task = ProjectorTask(db, **{"max_await_ms": 100, **options}).start()
    try:
        yield task.projector
    finally:
        await task.stop()


def now() -> datetime:
    """Now, to the millisecond (what MongoDB keeps)."""
    t = datetime.now(UTC)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


async def _record(store: EventStore, reserva: Reserva, steps: list[tuple[Tipo, dict[str, Any]]], together: bool) -> None:
    for tipo, datos in steps:
        reserva.record(tipo, datos, now())
        if not together:
            await store.save(reserva)
    await store.save(reserva)


async def solicitar(
    store: EventStore,
    *,
    usuario_id: str,
    evento_id: str,
    cantidad: int = 1,
    creada: datetime | None = None,
    reserva_id: str | None = None,
) -> Reserva:
    reserva = Reserva(id=reserva_id or uuid.uuid4().hex)
    datos = {
        "usuario_id": usuario_id,
        "evento_id": evento_id,
        "cantidad": cantidad,
        "asientos": [],
        "medio_pago": "tok_visa",
        "idempotency_key": uuid.uuid4().hex[:12],
    }
    reserva.record(Tipo.RESERVA_SOLICITADA, datos, creada or now())
    await store.save(reserva)
    return reserva


def _validated(reserva: Reserva, precio: int = PRECIO) -> list[tuple[Tipo, dict[str, Any]]]:
    return [
        (Tipo.DATOS_VALIDADOS, {"monto": precio * reserva.cantidad, "moneda": "EUR", "precio": precio}),
        (Tipo.PASO_INICIADO, {"paso": "ValidadorInventario"}),
        (Tipo.ENTRADAS_BLOQUEADAS, {"holds": [], "cantidad": reserva.cantidad, "asientos": []}),
        (Tipo.PASO_INICIADO, {"paso": "ProcesadorPago"}),
    ]


async def confirmar(store: EventStore, reserva: Reserva, together: bool = False, precio: int = PRECIO) -> None:
    steps = _validated(reserva, precio) + [
        (Tipo.PAGO_PROCESADO, {"pago_id": f"p-{reserva.id}", "monto": precio * reserva.cantidad, "moneda": "EUR"}),
        (Tipo.PASO_INICIADO, {"paso": "ConfirmadorReserva"}),
        (Tipo.COMPRA_REGISTRADA, {}),
        (Tipo.RESERVA_CONFIRMADA, {}),
    ]
    await _record(store, reserva, steps, together)


async def fallar(store: EventStore, reserva: Reserva, together: bool = False) -> None:
    motivo = {"motivo": "payment declined", "razon": "PAYMENT_DECLINED"}
    steps = _validated(reserva) + [
        (Tipo.PAGO_RECHAZADO, motivo),
        (Tipo.COMPENSACION_INICIADA, {**motivo, "pasos": ["ValidadorInventario"]}),
        (Tipo.ENTRADAS_LIBERADAS, {}),
        (Tipo.RESERVA_FALLIDA, motivo),
    ]
    await _record(store, reserva, steps, together)


async def cancelar(store: EventStore, reserva: Reserva, together: bool = False) -> None:
    steps = [
        (Tipo.CANCELACION_SOLICITADA, {"motivo": "cancelada por el usuario"}),
        (Tipo.ENTRADAS_LIBERADAS, {}),
        (Tipo.PAGO_REEMBOLSADO, {"pago_id": f"r-{reserva.id}", "monto": reserva.monto, "moneda": "EUR"}),
        (Tipo.COMPRA_ANULADA, {}),
        (Tipo.RESERVA_CANCELADA, {"motivo": "cancelada por el usuario"}),
    ]
    await _record(store, reserva, steps, together)


OUTCOMES = ("confirmada", "fallida", "cancelada", "pendiente")


async def purchase(store: EventStore, outcome: str, *, usuario_id: str, evento_id: str, cantidad: int, together: bool = False) -> Reserva:
    reserva = await solicitar(store, usuario_id=usuario_id, evento_id=evento_id, cantidad=cantidad)
    if outcome in ("confirmada", "cancelada"):
        await confirmar(store, reserva, together)
    if outcome == "cancelada":
        await cancelar(store, reserva, together)
    if outcome == "fallida":
        await fallar(store, reserva, together)
    return reserva


async def burst(store: EventStore, n: int, *, seed: int = 7, concurrency: int = 20, prefix: str = "") -> list[Reserva]:
    """n reservations of mixed outcomes over 3 users x 3 events, written concurrently."""
    rng = random.Random(seed)
    plan = [
        (rng.choice(OUTCOMES), f"{prefix}u{rng.randrange(3)}", f"{prefix}e{rng.randrange(3)}", rng.randint(1, 4), rng.random() < 0.5)
        for _ in range(n)
    ]
    gate = asyncio.Semaphore(concurrency)

    async def one(outcome: str, usuario: str, evento: str, cantidad: int, together: bool) -> Reserva:
        async with gate:
            return await purchase(store, outcome, usuario_id=usuario, evento_id=evento, cantidad=cantidad, together=together)

    return list(await asyncio.gather(*(one(*p) for p in plan)))


async def replayed(db: AsyncDatabase) -> list[Reserva]:
    """Every reservation as its stream says it is now (streams that cannot be replayed are left out)."""
    return [r async for batch in StreamSource(db).scan() for r in batch if isinstance(r, Reserva)]


def expected_stats(reservas: list[Reserva]) -> dict[str, dict[str, int]]:
    """Statistics computed straight from the aggregates (not through the projector's contribution())."""
    stats: dict[str, Counter[str]] = {}
    for r in reservas:
        s = stats.setdefault(r.evento_id, Counter())
        s["solicitadas"] += 1
        s["confirmadas"] += r.estado in (Estado.CONFIRMADA, Estado.CANCELADA)
        s["fallidas"] += r.estado is Estado.FALLIDA
        s["canceladas"] += r.estado is Estado.CANCELADA
        s["entradas_vendidas"] += r.cantidad if r.estado is Estado.CONFIRMADA else 0
        s["recaudado"] += r.charged
    names = ("solicitadas", "confirmadas", "fallidas", "canceladas", "entradas_vendidas", "recaudado")
    return {e: {k: int(c[k]) for k in names} for e, c in stats.items()}


async def assert_models_match_event_store(db: AsyncDatabase) -> None:
    """Every view answers what GetReserva would; the statistics are what the streams add up to."""
    reservas = await replayed(db)
    views, stats = await ReadModels(db).snapshot()
    assert len(views) == len(reservas)
    by_id = {v["_id"]: v for v in views}
    for r in reservas:
        assert reserva_to_pb(reserva_from_view(by_id[r.id])) == reserva_to_pb(r), r.id
    got = {s["_id"]: {k: v for k, v in s.items() if k != "_id"} for s in stats}
    assert got == expected_stats(reservas)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = "condition") -> float:
    """Poll until `check()` is true; returns how long it took (raises after `timeout`)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not await check():
        if loop.time() - start > timeout:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.02)
    return loop.time() - start


async def current_to(db: AsyncDatabase, instant: datetime, timeout: float = 20.0) -> float:
    """Wait until the checkpoint says the models reflect every event up to `instant`."""
    checkpoints = Checkpoints(db)

    async def reached() -> bool:
        checkpoint = await checkpoints.load()
        return checkpoint is not None and checkpoint.hasta is not None and checkpoint.hasta >= instant

    return await eventually(reached, timeout, f"read models current to {instant}")


def later(instant: datetime, seconds: float) -> datetime:
    return instant + timedelta(seconds=seconds)
