"""The figures of one benchmark run: computed from the runs, printed side by side, written as JSON, drawn.

Pure functions of what was measured (no I/O but writing the files asked for), so tests can check the
arithmetic and the JSON's shape without running anything. matplotlib is needed only to draw, and
only imported then: it is a bench-only extra (`pip install -e '.[bench]'`, which `make bench` does).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.bench.load import Run, Timed


@dataclass
class Level:
    """One batch at one number of calls in flight: the answers that count, per second, and latency (seconds)."""

    in_flight: int
    calls: int
    counted: int  # the answers the rate is about: confirmed purchases, SOLD_OUT answers, ...
    seconds: float
    p50: float
    p95: float
    p99: float
    max: float
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.counted / self.seconds if self.seconds > 0 else math.nan


def level(run: Run, in_flight: int, counts: Callable[[Timed], bool] = lambda t: t.error is None) -> Level:
    """Summarise a batch: `counts` says which answers the rate counts (latency is over every call)."""
    p = run.percentiles()
    counted = sum(1 for c in run.calls if counts(c))
    return Level(in_flight, len(run.calls), counted, run.elapsed, p["p50"], p["p95"], p["p99"], p["max"],
                 dict(run.outcomes()))  # fmt: skip


def ratios(system: Mapping[int, Level], floor: Mapping[int, Level]) -> dict[int, float]:
    """The system's rate over the floor's, at each number in flight measured on both."""
    return {c: system[c].rate / floor[c].rate if floor[c].rate > 0 else math.nan for c in system if c in floor}


@dataclass
class Growth:
    """Purchases/s of one event over its first reservations, and again once it holds `after_from` of them."""

    window: int  # purchases in each window (fewer if its time budget ran out first)
    first: Level
    after: Level
    after_from: int  # reservations the event held when the second window started
    target: int  # what the pre-fill aimed for (it may stop at its time budget first)
    prefill: str  # how it was filled
    prefill_seconds: float

    @property
    def ratio(self) -> float:
        return self.after.rate / self.first.rate if self.first.rate > 0 else math.nan


@dataclass
class Seated:
    """eventos' ReservarEntradas (one seat per call, one call at a time) on a small and on a large seated event."""

    small_seats: int
    large_seats: int
    small: Level
    large: Level

    @property
    def ratio(self) -> float:
        return self.large.p50 / self.small.p50 if self.small.p50 > 0 else math.nan


@dataclass
class Figures:
    """Everything measured on one system (one revision's services)."""

    label: str
    commit: str
    purchases: dict[int, Level] = field(default_factory=dict)
    sold_out: Level | None = None
    commands: dict[str, dict[str, Any]] = field(default_factory=dict)  # "purchase" / "sold_out": commands.Count
    growth: Growth | None = None
    seated: Seated | None = None
    race: dict[str, Any] = field(default_factory=dict)
    memory_kib: dict[str, dict[str, int]] = field(default_factory=dict)
    violations: list[str] | None = None  # None: not checked (the run stopped before)


@dataclass
class Results:
    machine: dict[str, Any]
    command: str
    stores: str
    floor: dict[int, Level] = field(default_factory=dict)
    floor_memory_kib: dict[str, dict[str, int]] = field(default_factory=dict)
    systems: list[Figures] = field(default_factory=list)


# ---- JSON ------------------------------------------------------------------------------------


def _level_json(lv: Level) -> dict[str, Any]:
    return {**asdict(lv), "rate": lv.rate}


def _figures_json(f: Figures, floor: Mapping[int, Level]) -> dict[str, Any]:
    found: dict[str, Any] = {
        "label": f.label,
        "commit": f.commit,
        "purchases": {str(c): _level_json(lv) for c, lv in f.purchases.items()},
        "ratio_to_floor": {str(c): r for c, r in ratios(f.purchases, floor).items()},
        "sold_out": _level_json(f.sold_out) if f.sold_out else None,
        "commands": f.commands,
        "growth": None,
        "seated": None,
        "race": f.race,
        "memory_kib": f.memory_kib,
        "invariants": None if f.violations is None else {"held": not f.violations, "violations": f.violations},
    }
    if f.growth:
        g = f.growth
        found["growth"] = {
            "window": g.window, "first": _level_json(g.first), "after": _level_json(g.after), "after_from": g.after_from,
            "target": g.target, "prefill": g.prefill, "prefill_seconds": g.prefill_seconds, "ratio": g.ratio,
        }  # fmt: skip
    if f.seated:
        s = f.seated
        found["seated"] = {
            "small_seats": s.small_seats, "large_seats": s.large_seats,
            "small": _level_json(s.small), "large": _level_json(s.large), "ratio": s.ratio,
        }  # fmt: skip
    return found


def as_json(results: Results) -> dict[str, Any]:
    """The whole run; rates per second, latencies in seconds, keys of in-flight levels as strings."""
    return {
        "machine": results.machine,
        "command": results.command,
        "stores": results.stores,
        "floor": {str(c): _level_json(lv) for c, lv in results.floor.items()},
        "floor_memory_kib": results.floor_memory_kib,
        "systems": [_figures_json(f, results.floor) for f in results.systems],
    }


def write_json(results: Results, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # NaN is not JSON: a figure that could not be computed is null.
    text = json.dumps(_nan_to_none(as_json(results)), indent=2, sort_keys=False)
    path.write_text(text + "\n", encoding="utf-8")


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value


# ---- the table -------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.0f}"


def _rate(rate: float) -> str:
    return "-" if math.isnan(rate) else f"{rate:,.1f}/s"


def _x(ratio: float) -> str:
    return "-" if math.isnan(ratio) else f"{ratio:.2f}x"


def _latency(lv: Level | None) -> str:
    return "-" if lv is None else f"{_ms(lv.p50)} / {_ms(lv.p99)}"


def floor_lines(results: Results) -> list[str]:
    lines = [f"{'bare-store floor: in flight':<34}{'reservations/s':>16}{'p50 ms':>9}{'p99 ms':>9}{'calls':>8}"]
    for c, lv in results.floor.items():
        lines.append(f"{c:<34}{_rate(lv.rate):>16}{_ms(lv.p50):>9}{_ms(lv.p99):>9}{lv.calls:>8}")
    return lines


def _commands(count: Mapping[str, Any] | None) -> str:
    if not count:
        return "-"
    kinds = count["per_call_by_kind"]
    short = " ".join(f"{k[0]}{kinds[k]:.1f}".rstrip("0").rstrip(".") for k in ("insert", "query", "update", "delete", "command"))
    return f"{count['per_call']:.1f} ({short})"


def _rows(f: Figures, floor: Mapping[int, Level]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = [("code", f"{f.label} ({f.commit})")]
    ratio = ratios(f.purchases, floor)
    for c, lv in f.purchases.items():
        rows.append((f"confirmed purchases/s, {c} in flight", f"{_rate(lv.rate)} ({_x(ratio.get(c, math.nan))} floor)"))
        rows.append(("  p50 / p99 ms", _latency(lv)))
    if f.sold_out:
        rows.append((f"SOLD_OUT answers/s, {f.sold_out.in_flight} in flight", _rate(f.sold_out.rate)))
        rows.append(("  p50 / p99 ms", _latency(f.sold_out)))
    for key, what in (("purchase", "confirmed purchase"), ("sold_out", "SOLD_OUT answer")):
        count = f.commands.get(key)
        rows.append((f"MongoDB commands per {what}", _commands(count)))
        rows.append(("  of which an idle stack sends", f"{count['idle_per_call']:.1f}" if count else "-"))
    if f.growth:
        g = f.growth
        rows.append((f"growth: purchases/s, first {g.window:,} reservations", _rate(g.first.rate)))
        rows.append((f"  after {g.target:,} reservations", f"{_rate(g.after.rate)} (after {g.after_from:,})"))
        rows.append(("  after / first", _x(g.ratio)))
    if f.seated:
        s = f.seated
        rows.append((f"ReservarEntradas p50 ms, {s.small_seats:,} seats", _ms(s.small.p50)))
        rows.append((f"ReservarEntradas p50 ms, {s.large_seats:,} seats", _ms(s.large.p50)))
        rows.append(("  large / small", _x(s.ratio)))
    if f.race:
        r = f.race
        rows.append((f"race {r['buyers']}/{r['tickets']} at {r['in_flight']}: answers/s", _rate(r["answers_per_second"])))
        rows.append(("  sold / oversold", f"{r['sold']} / {r['oversold']}"))
    for name, kib in f.memory_kib.items():
        rows.append((f"peak RSS MiB, {name}", f"{kib.get('VmHWM', 0) / 1024:.0f}"))
    held = "not checked" if f.violations is None else ("all held" if not f.violations else f"{len(f.violations)} BROKEN")
    rows.append(("invariants", held))
    return rows


def _keyed(rows: list[tuple[str, str]]) -> list[tuple[tuple[str, str], str, str]]:
    """Each row with a key unique in its column: an indented row is keyed with the row it details."""
    keyed, parent = [], ""
    for label, value in rows:
        if not label.startswith("  "):
            parent = label
        keyed.append(((parent, label), label, value))
    return keyed


def figures_lines(results: Results) -> list[str]:
    """One column per system, one line per figure (a figure missing on one system shows '-')."""
    columns = [_keyed(_rows(f, results.floor)) for f in results.systems]
    order: list[tuple[str, str]] = []
    labels: dict[tuple[str, str], str] = {}
    for column in columns:
        for key, label, _ in column:
            if key not in labels:
                order.append(key)
                labels[key] = label
    values = [{key: value for key, _, value in column} for column in columns]
    return [f"{labels[k]:<46}" + "".join(f"{v.get(k, '-'):<34}" for v in values) for k in order]


# ---- the chart -------------------------------------------------------------------------------


def draw_chart(results: Results, path: Path) -> str:
    """Purchases/s against purchases in flight (each system beside the floor), and p50/p99 latency.

    Returns what it did, for the printout: without matplotlib there is no chart, and no failure.
    """
    try:
        import matplotlib  # noqa: PLC0415 - optional: a bench-only extra

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
        from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: PLC0415
    except ImportError:
        return "chart: not drawn (matplotlib is not installed: pip install -e '.[bench]', or use make bench)"
    series = [("bare-store floor", results.floor)] + [(f"{f.label} ({f.commit})", f.purchases) for f in results.systems]
    fig, (rates, latency) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (name, levels), color in zip(series, ("black", "tab:blue", "tab:orange", "tab:green"), strict=False):
        xs = list(levels)
        style = "--" if name == "bare-store floor" else "-"
        rates.plot(xs, [levels[c].rate for c in xs], style, color=color, marker="o", label=name)
        latency.plot(xs, [levels[c].p50 * 1000 for c in xs], style, color=color, marker="o", label=f"{name} p50")
        latency.plot(xs, [levels[c].p99 * 1000 for c in xs], style, color=color, marker="^", alpha=0.5,
                     label=f"{name} p99")  # fmt: skip
    for ax in (rates, latency):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("purchases in flight")
        ax.grid(True, which="both", alpha=0.3)
    in_flight = sorted({c for _, levels in series for c in levels})
    for ax in (rates, latency):
        ax.set_xticks(in_flight, [str(c) for c in in_flight])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    rates.set_ylabel("confirmed purchases/s")
    rates.set_title("throughput")
    rates.legend(fontsize=8)
    latency.set_ylabel("latency, ms")
    latency.set_title("latency p50 (o) and p99 (^)")
    latency.legend(fontsize=7)
    machine = results.machine
    fig.suptitle(f"EventFlow vs the bare-store floor: {machine.get('cores')} cores, {results.stores}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return f"chart: {path}"
