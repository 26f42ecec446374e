"""The read side: a projector fed by the event store's change stream keeps `reservas_vista` and
`estadisticas_evento` equal to what the streams say, exactly once, across restarts, rebuilds and
concurrent projectors; the queries page through it with no overlap or gap.

Real SecantusDB; events are appended the way the saga does (`Reserva.record` + `EventStore.save`).
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from infra.errors import InvalidArgument
from infra.mongo import create_client
from infra.limits import ReplyBudget, field_size
from projections_support import (  # noqa: F401 - db and store are fixtures
    BUDGET,
    TOKENS,
    assert_models_match_event_store,
    burst,
    cancelar,
    confirmar,
    current_to,
    eventually,
    expected_stats,
    fallar,
    now,
    replayed,
    running,
    solicitar,
    db,
    store,
)
from reservas.domain import Estado, Reserva
from reservas.event_store import EventStore
from reservas.mapping import reserva_to_pb
from reservas.projections.checkpoint import Checkpoints
from reservas.projections.projector import Projector
from reservas.projections.queries import ReservasQueries
from reservas.projections.read_models import VIEWS, ReadModels, reserva_from_view
from reservas.projections.rebuild import ProgressBar, rebuild
from reservas.projections.source import current_position


async def view_version(db: AsyncDatabase, reserva_id: str) -> int:
    doc = await db[VIEWS].find_one({"_id": reserva_id}, {"version": 1})
    return int(doc["version"]) if doc else 0


async def test_projector_applies_a_stream_and_the_view_equals_the_replayed_aggregate(
    db: AsyncDatabase, store: EventStore
) -> None:
    async with running(db):
        reserva = await solicitar(store, usuario_id="u1", evento_id="e1", cantidad=2)
        await confirmar(store, reserva)
        await eventually(lambda: _at(db, reserva), what="the view at the stream's version")
        view = await db[VIEWS].find_one({"_id": reserva.id})
        assert view is not None
        assert reserva_to_pb(reserva_from_view(view)) == reserva_to_pb(await store.get(reserva.id))  # type: ignore[arg-type]
        stats = await ReservasQueries(db, TOKENS, BUDGET).estadisticas_evento("e1")
        assert (stats.solicitadas, stats.confirmadas, stats.entradas_vendidas, stats.recaudado) == (1, 1, 2, 3000)
        assert stats.tasa_conversion == 1.0


async def _at(db: AsyncDatabase, reserva: Reserva) -> bool:
    return await view_version(db, reserva.id) == reserva.version


async def test_applying_a_state_again_or_an_older_one_changes_nothing(db: AsyncDatabase, store: EventStore) -> None:
    models = ReadModels(db)
    reserva = await solicitar(store, usuario_id="u1", evento_id="e1", cantidad=3)
    pendiente = await store.get(reserva.id)
    await confirmar(store, reserva)
    confirmada = await store.get(reserva.id)
    assert pendiente is not None and confirmada is not None
    assert await models.apply([pendiente]) == 1
    assert await models.apply([confirmada]) == 1
    assert await models.apply([confirmada]) == 0  # the same state again
    assert await models.apply([pendiente]) == 0  # an older state, late
    assert await models.apply([pendiente, confirmada, confirmada]) == 0
    await assert_models_match_event_store(db)


async def test_an_event_delivered_twice_counts_once(db: AsyncDatabase, store: EventStore) -> None:
    """Rewind the checkpoint so the projector hears every event again: the models do not change."""
    async with running(db) as projector:
        await current_to(db, now())
        before_the_events = await current_position(db)
        await burst(store, 12)
        await current_to(db, now())
        await assert_models_match_event_store(db)
        before = await ReadModels(db).snapshot()
        seen = projector.changes_seen
    # Back to before the first event: every event is delivered a second time.
    await db["proyecciones_checkpoint"].update_one({"_id": "reservas"}, {"$set": {"position": before_the_events}})
    async with running(db) as again:
        await eventually(lambda: _changes_at_least(again, seen), what="every event delivered again")
        await current_to(db, now())
    assert await ReadModels(db).snapshot() == before


async def _changes_at_least(projector: Projector, n: int) -> bool:
    return projector.changes_seen >= n


async def test_first_start_catches_up_with_streams_written_before_it(db: AsyncDatabase, store: EventStore) -> None:
    await burst(store, 10)
    async with running(db):
        await current_to(db, now())
    await assert_models_match_event_store(db)


async def test_projector_cancelled_mid_way_and_restarted_counts_nothing_twice(
    db: AsyncDatabase, store: EventStore
) -> None:
    async with running(db):
        await current_to(db, now())  # watching
        writer = asyncio.create_task(burst(store, 40, concurrency=10))
        await eventually(lambda: _views_at_least(db, 5), what="some views")
    # Cancelled mid-way (the writer is still appending); it comes back and finishes.
    await writer
    async with running(db):
        await current_to(db, now())
    await assert_models_match_event_store(db)


async def _views_at_least(db: AsyncDatabase, n: int) -> bool:
    return await db[VIEWS].count_documents({}) >= n


async def test_two_projectors_at_once_give_the_same_models(mongo_uri: str, db: AsyncDatabase, store: EventStore) -> None:
    other_client = create_client(mongo_uri, "test-projections-2")
    try:
        async with running(db) as one, running(other_client[db.name]) as two:
            started = now()  # both follow the stream before the burst, so both see it arrive
            await eventually(lambda: _both_current(one, two, started), what="both projectors following")
            await burst(store, 40, concurrency=10)
            since = now()
            await eventually(lambda: _both_current(one, two, since), what="both projectors current")
        assert one.changes_seen > 0 and two.changes_seen > 0  # both did the work, concurrently
        await assert_models_match_event_store(db)
    finally:
        await other_client.close()


async def _both_current(one: Projector, two: Projector, instant: Any) -> bool:
    return all(p.current_to is not None and p.current_to >= instant for p in (one, two))


async def test_rebuild_equals_incremental(db: AsyncDatabase, store: EventStore) -> None:
    async with running(db):
        await burst(store, 30)
        await current_to(db, now())
    incremental = await ReadModels(db).snapshot()
    out = io.StringIO()
    result = await rebuild(db, owner="test", expected=await Checkpoints(db).load(), progress=ProgressBar(0, out))
    assert result.streams == 30
    assert await ReadModels(db).snapshot() == incremental
    assert out.getvalue().splitlines()[-1] == f"[{'#' * 30}] 30/30 streams"
    # The checkpoint was reset consistently: the projector follows from the rebuild's position.
    async with running(db):
        late = await solicitar(store, usuario_id="u9", evento_id="e9")
        await eventually(lambda: _at(db, late), what="an event after the rebuild")
    await assert_models_match_event_store(db)


async def test_rebuild_while_a_projector_runs_and_events_arrive(db: AsyncDatabase, store: EventStore) -> None:
    async with running(db):
        await burst(store, 20, prefix="a")
        writer = asyncio.create_task(burst(store, 20, prefix="b", concurrency=5))
        await rebuild(db, owner="test", expected=await Checkpoints(db).load())
        await writer
        await current_to(db, now())
    await assert_models_match_event_store(db)


async def test_a_resume_point_lost_from_the_oplog_falls_back_to_a_full_rebuild(
    db: AsyncDatabase, store: EventStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(db):
        await burst(store, 8)
        await current_to(db, now())
    generation = (await Checkpoints(db).load()).generation  # type: ignore[union-attr]
    await db[VIEWS].delete_many({})  # damage the model: a full rebuild repairs it
    follow = Projector.follow
    calls = 0

    async def lost_once(self: Projector, checkpoint: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OperationFailure("Resume of change stream was not possible", code=286)
        await follow(self, checkpoint)

    monkeypatch.setattr(Projector, "follow", lost_once)
    async with running(db):
        await eventually(lambda: _generation_after(db, generation), what="a rebuild")
        await current_to(db, now())
    assert "no longer in the oplog" in caplog.text
    await assert_models_match_event_store(db)


async def _generation_after(db: AsyncDatabase, generation: int) -> bool:
    checkpoint = await Checkpoints(db).load()
    return checkpoint is not None and checkpoint.generation > generation and checkpoint.hasta is not None


async def test_lag_after_an_append_is_short_when_quiet(db: AsyncDatabase, store: EventStore) -> None:
    lags = []
    async with running(db, max_await_ms=250):
        await current_to(db, now())
        for i in range(5):
            reserva = await solicitar(store, usuario_id="u", evento_id=f"lag{i}")
            lags.append(await eventually(lambda r=reserva: _at(db, r), timeout=5, what="the view"))  # type: ignore[misc]
            await asyncio.sleep(0.3)
        appended = now()
        hasta_lag = await current_to(db, appended, timeout=5)
    # The README's promise: when the system is quiet, the projector's lag stays under a second.
    shown = f"append -> view: {', '.join(f'{x * 1000:.0f}ms' for x in lags)}; actualizado_hasta: {hasta_lag * 1000:.0f}ms"
    assert max(lags) < 1.0, shown
    assert hasta_lag < 1.0, shown


def test_progress_bar_renders_done_over_total() -> None:
    out = io.StringIO()
    bar = ProgressBar(5000, out, width=10)
    assert bar.render(1234) == "[##........] 1234/5000 streams"
    bar.update(2500)
    bar.update(5000, final=True)
    assert out.getvalue().splitlines() == ["[#####.....] 2500/5000 streams", "[##########] 5000/5000 streams"]


# ---- queries -------------------------------------------------------------------------------------------


async def test_burst_statistics_and_lists_agree_with_the_event_store(db: AsyncDatabase, store: EventStore) -> None:
    async with running(db):
        await current_to(db, now())
        await burst(store, 200, concurrency=25)
        since = now()
        await current_to(db, since)
    await assert_models_match_event_store(db)
    reservas = await replayed(db)
    queries = ReservasQueries(db, TOKENS, BUDGET)
    for evento_id, expected in expected_stats(reservas).items():
        stats = await queries.estadisticas_evento(evento_id)
        assert {k: getattr(stats, k) for k in expected} == expected
        assert stats.tasa_conversion == pytest.approx(expected["confirmadas"] / expected["solicitadas"])
        assert stats.actualizado_hasta is not None and stats.actualizado_hasta >= since
    for estado in Estado:
        listed = await _all_pages(queries, estado=estado, page_size=37)
        assert [r.id for r in listed] == [r.id for r in _newest_first(reservas) if r.estado is estado]


def _newest_first(reservas: list[Reserva]) -> list[Reserva]:
    return sorted(reservas, key=lambda r: (r.creada, r.id), reverse=True)


async def _all_pages(queries: ReservasQueries, **filters: Any) -> list[Reserva]:
    listed: list[Reserva] = []
    token = ""
    while True:
        page = await queries.list_reservas(page_token=token, **filters)
        listed.extend(page.reservas)
        token = page.next_page_token
        if not token:
            return listed


async def test_paging_has_no_overlap_or_gap_with_every_filter(db: AsyncDatabase, store: EventStore) -> None:
    # Ties on `creada` too: the id breaks them.
    same_instant = now()
    for i in range(6):
        await solicitar(store, usuario_id="u0", evento_id="e1", creada=same_instant, reserva_id=f"tie{i}")
    await burst(store, 30)
    await rebuild(db, owner="test", expected=await Checkpoints(db).load())
    reservas = _newest_first(await replayed(db))
    queries = ReservasQueries(db, TOKENS, BUDGET)
    filters: list[dict[str, Any]] = [
        {},
        {"usuario_id": "u0"},
        {"evento_id": "e1"},
        {"estado": Estado.CONFIRMADA},
        {"usuario_id": "u1", "evento_id": "e2"},
        {"usuario_id": "u0", "estado": Estado.PENDIENTE},
        {"usuario_id": "nadie"},
    ]
    for f in filters:
        for size in (3, 500):
            listed = await _all_pages(queries, page_size=size, **f)
            expected = [
                r.id for r in reservas
                if all(getattr(r, k) == v for k, v in f.items())
            ]  # fmt: skip
            assert [r.id for r in listed] == expected, (f, size)
    first = await queries.list_reservas()
    assert len(first.reservas) == min(50, len(reservas))  # page_size 0: the default


async def test_bad_page_requests_are_invalid_argument(db: AsyncDatabase, store: EventStore) -> None:
    for i in range(3):
        await solicitar(store, usuario_id="u1", evento_id="e1", reserva_id=f"r{i}")
    await rebuild(db, owner="test", expected=None)
    queries = ReservasQueries(db, TOKENS, BUDGET)
    page = await queries.list_reservas(usuario_id="u1", page_size=1)
    assert page.next_page_token
    forged = page.next_page_token[:-1] + ("0" if page.next_page_token[-1] != "0" else "1")
    for kwargs in (
        {"usuario_id": "u1", "page_token": forged},
        {"usuario_id": "u2", "page_token": page.next_page_token},  # another query's token
        {"page_token": "not-a-token"},
    ):
        with pytest.raises(InvalidArgument) as error:
            await queries.list_reservas(**kwargs)
        assert (error.value.reason, error.value.metadata) == ("INVALID_PAGE_TOKEN", {"field": "page_token"})
    with pytest.raises(InvalidArgument) as error:
        await queries.list_reservas(page_size=-1)
    assert error.value.metadata == {"field": "page_size"}
    with pytest.raises(InvalidArgument) as error:
        await queries.estadisticas_evento("")
    assert error.value.metadata == {"field": "evento_id"}
    empty = await queries.estadisticas_evento("sin-reservas")
    assert (empty.solicitadas, empty.tasa_conversion) == (0, 0.0)


async def test_failed_and_cancelled_reservations_count_as_the_contract_says(db: AsyncDatabase, store: EventStore) -> None:
    async with running(db):
        ok = await solicitar(store, usuario_id="u", evento_id="e", cantidad=2)
        await confirmar(store, ok)
        bad = await solicitar(store, usuario_id="u", evento_id="e", cantidad=1)
        await fallar(store, bad)
        gone = await solicitar(store, usuario_id="u", evento_id="e", cantidad=4)
        await confirmar(store, gone, together=True)
        await cancelar(store, gone)
        await solicitar(store, usuario_id="u", evento_id="e", cantidad=1)  # still PENDIENTE
        await current_to(db, now())
    stats = await ReservasQueries(db, TOKENS, BUDGET).estadisticas_evento("e")
    assert (stats.solicitadas, stats.confirmadas, stats.fallidas, stats.canceladas) == (4, 2, 1, 1)
    assert (stats.entradas_vendidas, stats.recaudado, stats.tasa_conversion) == (2, 3000, 0.5)


async def test_a_page_is_bounded_by_bytes_as_well_as_by_page_size(db: AsyncDatabase, store: EventStore) -> None:
    """However many reservations page_size asks for, a page stops where the next one would pass the byte
    budget, and its next_page_token continues from there: no overlap, no gap."""
    await burst(store, 40)
    await rebuild(db, owner="test", expected=await Checkpoints(db).load())
    expected = [r.id for r in _newest_first(await replayed(db))]
    one = reserva_to_pb(reserva_from_view(await db[VIEWS].find_one({}))).ByteSize()
    tight = ReplyBudget(limit=one * 5, size_of=lambda r: reserva_to_pb(r).ByteSize())
    queries = ReservasQueries(db, TOKENS, tight)
    listed, token, pages = [], "", 0
    while True:
        page = await queries.list_reservas(page_size=500, page_token=token)
        assert 0 < len(page.reservas) < 10
        assert sum(field_size(reserva_to_pb(r).ByteSize()) for r in page.reservas) <= tight.limit
        listed.extend(r.id for r in page.reservas)
        pages, token = pages + 1, page.next_page_token
        if not token:
            break
    assert listed == expected and pages >= 5
