"""The benchmark's own arithmetic and its floor, without running the benchmark (`make bench` does that).

Percentiles, rates, ratios to the floor, the JSON's shape, the side-by-side table, the command count's
subtraction of its own readings, and the floor's reservation against the session's real stores. No
assertion on a timing: those belong to the benchmark's printout, never to a pass or a failure.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from tests.bench import commands, report
from tests.bench.floor import SOLD_OUT, Floor
from tests.bench.load import Run, Timed, percentiles, pool
from tests.bench.report import Figures, Growth, Level, Results, Seated, level, ratios


def lv(in_flight: int, counted: int, seconds: float, p50: float = 0.01, p99: float = 0.02) -> Level:
    return Level(in_flight, counted, counted, seconds, p50, p50, p99, p99, {"OK": counted})


def results(*systems: Figures) -> Results:
    floor = {1: lv(1, 200, 1.0), 16: lv(16, 400, 1.0), 64: lv(64, 100, 1.0)}
    return Results({"cores": 2}, "python -m tests.bench --quick", "SecantusDB + redis-server", floor, {}, list(systems))


def figures(label: str, rate: float) -> Figures:
    f = Figures(label, "abc1234", purchases={1: lv(1, int(rate), 1.0), 16: lv(16, int(rate * 2), 1.0)})
    f.sold_out = lv(64, 50, 1.0)
    f.commands = {"purchase": {"per_call": 52.0, "idle_per_call": 0.5,
                               "per_call_by_kind": {"insert": 13.0, "query": 15.0, "update": 18.0, "delete": 0.0,
                                                    "command": 6.0}}}  # fmt: skip
    f.growth = Growth(100, lv(16, 50, 1.0), lv(16, 10, 1.0), 2000, 20000, "synthetic", 9.0)
    f.seated = Seated(100, 50000, lv(1, 5, 1.0, p50=0.004), lv(1, 5, 1.0, p50=0.268))
    f.violations = []
    return f


def test_percentiles_are_nearest_rank() -> None:
    samples = [i / 100 for i in range(1, 101)]  # 0.01 .. 1.00
    p = percentiles(samples)
    assert (p["p50"], p["p95"], p["p99"], p["max"]) == (0.5, 0.95, 0.99, 1.0)
    assert percentiles([0.3]) == {"p50": 0.3, "p95": 0.3, "p99": 0.3, "max": 0.3}
    assert all(math.isnan(v) for v in percentiles([]).values())


def test_level_counts_only_the_answers_asked_for_and_times_every_call() -> None:
    run = Run([Timed(0.1, 0.1, "yes"), Timed(0.2, 0.2, "no"), Timed(0.4, 0.4, "yes"), Timed(0.3, 0.5, "yes")], 2.0)
    found = level(run, 16, lambda t: t.value == "yes")
    assert (found.calls, found.counted, found.rate) == (4, 3, 1.5)
    assert (found.p50, found.max) == (0.2, 0.4)
    assert found.outcomes == {"OK": 4}
    assert math.isnan(level(Run([], 0.0), 1).rate)


def test_ratios_to_the_floor_at_each_level_measured_on_both() -> None:
    floor = {1: lv(1, 200, 1.0), 16: lv(16, 400, 2.0), 64: lv(64, 0, 1.0)}
    system = {1: lv(1, 50, 1.0), 16: lv(16, 300, 1.0), 64: lv(64, 10, 1.0), 128: lv(128, 10, 1.0)}
    found = ratios(system, floor)
    assert found[1] == 0.25 and found[16] == 1.5
    assert math.isnan(found[64])  # a floor that answered nothing gives no ratio, not a division error
    assert 128 not in found


def test_growth_and_seated_ratios() -> None:
    f = figures("x", 10)
    assert f.growth is not None and f.growth.ratio == 0.2
    assert f.seated is not None and f.seated.ratio == pytest.approx(67.0)


def test_json_has_the_floor_every_system_and_no_nan(tmp_path: Path) -> None:
    run = results(figures("this checkout", 20), figures("baseline main", 10))
    run.systems[1].purchases[1] = lv(1, 0, 0.0)  # a rate that cannot be computed
    path = tmp_path / "out" / "bench.json"
    report.write_json(run, path)
    found = json.loads(path.read_text())
    assert set(found) == {"machine", "command", "stores", "floor", "floor_memory_kib", "systems"}
    assert set(found["floor"]) == {"1", "16", "64"}
    assert found["floor"]["16"]["rate"] == 400.0 and found["floor"]["16"]["p99"] == 0.02
    this, baseline = found["systems"]
    assert [this["label"], baseline["label"]] == ["this checkout", "baseline main"]
    assert this["ratio_to_floor"] == {"1": 0.1, "16": 0.1}
    assert baseline["purchases"]["1"]["rate"] is None
    assert this["growth"]["ratio"] == 0.2 and this["seated"]["large"]["p50"] == 0.268
    assert this["sold_out"]["rate"] == 50.0
    assert this["invariants"] == {"held": True, "violations": []}
    assert this["commands"]["purchase"]["per_call"] == 52.0


def test_table_puts_systems_side_by_side() -> None:
    lines = report.figures_lines(results(figures("this checkout", 20), Figures("baseline main", "def5678")))
    by_label = {line[:46].rstrip(): line[46:] for line in lines}
    assert "this checkout (abc1234)" in by_label["code"] and "baseline main (def5678)" in by_label["code"]
    assert "20.0/s (0.10x floor)" in by_label["confirmed purchases/s, 1 in flight"]
    assert by_label["confirmed purchases/s, 1 in flight"].split()[-1] == "-"  # the baseline measured nothing
    assert "52.0 (i13 q15 u18 d0 c6)" in by_label["MongoDB commands per confirmed purchase"]
    assert report.floor_lines(results())[1].split()[:2] == ["1", "200.0/s"]


def test_chart_is_optional(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed: make test does not need it
    message = report.draw_chart(results(figures("this checkout", 20)), tmp_path / "chart.png")
    assert "not drawn" in message
    assert not (tmp_path / "chart.png").exists()


def test_command_delta_subtracts_its_own_readings() -> None:
    before = {"insert": 1, "query": 2, "update": 3, "delete": 0, "command": 10, "getmore": 7}
    after = {"insert": 14, "query": 17, "update": 21, "delete": 0, "command": 19, "getmore": 99}
    assert commands.delta(before, after, readings=3, per_reading=1) == {
        "insert": 13, "query": 15, "update": 18, "delete": 0, "command": 6,
    }  # fmt: skip
    count = commands.Count(2, commands.delta(before, after, 3, 1), 4.0, {"update": 0.25, "command": 0.25})
    assert (count.total, count.per_call, count.idle_per_call) == (52, 26.0, 1.0)
    assert count.as_json()["per_call_less_idle"] == 25.0


async def test_counter_sees_the_commands_of_a_call(mongo_uri: str, db_name: Callable[[str], str]) -> None:
    mongo: AsyncMongoClient = AsyncMongoClient(mongo_uri)
    try:
        counter = commands.Counter(mongo)
        assert await counter.calibrate() >= 0
        collection = mongo[db_name("bench")]["counted"]

        async def run() -> None:
            await collection.insert_one({"_id": 1})
            await collection.find_one({"_id": 1})
            await collection.update_one({"_id": 1}, {"$set": {"a": 1}})

        count = await counter.around(1, run, {})
        assert count.commands["insert"] >= 1 and count.commands["query"] >= 1 and count.commands["update"] >= 1
    finally:
        await mongo.close()


async def test_floor_reserves_then_answers_sold_out(
    mongo_uri: str, redis_url: str, db_name: Callable[[str], str]
) -> None:
    mongo: AsyncMongoClient = AsyncMongoClient(mongo_uri)
    redis = Redis.from_url(redis_url)
    prefix = db_name("floor") + ":"
    floor = Floor(mongo, redis, db_name("floor"), prefix)
    try:
        usuarios = await floor.create_usuarios(3)
        evento_id = await floor.create_evento(2)
        run = await pool(list(itertools.islice(floor.purchases(usuarios, evento_id), 3)), 3)
        answers = sorted(run.ok, key=lambda a: a == SOLD_OUT)
        assert answers[2] == SOLD_OUT and SOLD_OUT not in answers[:2]
        evento = await floor.eventos.find_one({"_id": evento_id})
        assert evento is not None and evento["entradas_disponibles"] == 0
        stored = {r["_id"]: r async for r in floor.reservas.find({"evento_id": evento_id})}
        assert set(stored) == set(answers[:2])
        histories = [rid async for u in floor.usuarios.find({}) for rid in u["historial_compras"]]
        assert sorted(histories) == sorted(answers[:2])
        assert [key async for key in redis.scan_iter(match=f"{prefix}*")] == []  # every hold released

        budgeted = await pool(floor.purchases(usuarios, evento_id), 2, seconds=0.2)  # endless, stopped by its budget
        assert budgeted.calls and all(t.value == SOLD_OUT for t in budgeted.calls)
    finally:
        await mongo.close()
        await redis.aclose()
