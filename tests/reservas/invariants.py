"""The four invariants of DESIGN.md, checked by reading the three databases and the ledger directly.

Nothing here goes through a service: usuarios' `usuarios`, eventos' `eventos` and `inventario`
(seats and allocations, see eventos/repository.py) and reservas' `reserva_eventos` (replayed into
aggregates) and `pagos` (the ledger) are read as stored.

1. per event: entradas_disponibles + tickets of CONFIRMADA reservations + tickets held by
   PENDIENTE ones = aforo_total, and 0 <= entradas_disponibles <= aforo_total (and eventos' count
   of each buyer's tickets, which its max_por_usuario is judged against, is what that buyer's
   allocations hold, and an allocation that names a buyer names its reservation's);
2. no seat is sold twice;
3. each CONFIRMADA reservation appears exactly once in its user's historial_compras, and no
   other does;
4. the payments of a CONFIRMADA reservation net to its amount, of any other to zero.

With `allow_pending` (a check in the middle of a run), a PENDIENTE reservation, or a CONFIRMADA one
being cancelled, may hold tickets, appear in the history and have money in flight; by default every
saga and cancellation must have settled.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from pymongo import AsyncMongoClient

from reservas.domain import Estado, Event, Reserva, Tipo
from reservas.service import retryable


@dataclass
class Report:
    reservas: dict[str, Reserva] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    def count(self, estado: Estado) -> int:
        return sum(1 for r in self.reservas.values() if r.estado is estado)


async def _reservas(mongo: AsyncMongoClient, db: str) -> dict[str, Reserva]:
    streams: dict[str, list[Event]] = defaultdict(list)
    cursor = mongo[db]["reserva_eventos"].find({}, {"_id": 0}).sort([("reserva_id", 1), ("version", 1)])
    async for doc in cursor:
        streams[doc["reserva_id"]].append(
            Event(doc["reserva_id"], doc["version"], Tipo(doc["tipo"]), doc["datos"], doc["ocurrido"], doc["metadata"])
        )
    replayed = {rid: Reserva.replay(events) for rid, events in streams.items()}
    return {rid: r for rid, r in replayed.items() if r is not None}


async def check_invariants(
    mongo: AsyncMongoClient, *, usuarios_db: str, eventos_db: str, reservas_db: str, allow_pending: bool = False
) -> Report:
    """Assert the four invariants; returns what was read (for further assertions)."""
    report = await find_violations(
        mongo, usuarios_db=usuarios_db, eventos_db=eventos_db, reservas_db=reservas_db, allow_pending=allow_pending
    )
    assert not report.violations, "invariants broken:\n  " + "\n  ".join(report.violations)
    return report


async def find_violations(
    mongo: AsyncMongoClient, *, usuarios_db: str, eventos_db: str, reservas_db: str, allow_pending: bool = False
) -> Report:
    """Check the four invariants without asserting: the report lists every violation (the benchmarks use it)."""
    report = Report(reservas=await _reservas(mongo, reservas_db))
    bad = report.violations.append
    reservas = report.reservas

    def in_flight(r: Reserva | None) -> bool:
        """A saga or a cancellation still running: its effects may be partly done."""
        return r is not None and not r.settled

    def sold(r: Reserva) -> bool:
        """CONFIRMADA and not being cancelled."""
        return r.estado is Estado.CONFIRMADA and not r.cancelando

    if not allow_pending:
        for r in reservas.values():
            if not r.settled:
                bad(f"reservation {r.id} has not settled: {r.estado}{' (cancelling)' if r.cancelando else ''}")

    # 1 and 2: inventory, from eventos' own documents: the active allocations and the seats' holders.
    active: defaultdict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    async for a in mongo[eventos_db]["inventario"].find({"tipo": "reserva", "liberada": False}):
        if a["reserva_id"] in active[a["evento_id"]]:
            bad(f"evento {a['evento_id']}: reservation {a['reserva_id']} has two allocations")
        active[a["evento_id"]][a["reserva_id"]] = a
    holders: defaultdict[str, dict[str, str | None]] = defaultdict(dict)
    async for seat in mongo[eventos_db]["inventario"].find({"tipo": "asiento"}):
        holders[seat["evento_id"]][seat["asiento"]] = seat["reserva_id"]
    bought: defaultdict[str, dict[str, int]] = defaultdict(dict)
    async for buyer in mongo[eventos_db]["inventario"].find({"tipo": "comprador", "entradas": {"$ne": 0}}):
        bought[buyer["evento_id"]][buyer["usuario_id"]] = buyer["entradas"]
    async for evento in mongo[eventos_db]["eventos"].find({}):
        eid, aforo, disponibles = evento["_id"], evento["aforo_total"], evento["entradas_disponibles"]
        if not 0 <= disponibles <= aforo:
            bad(f"evento {eid}: entradas_disponibles {disponibles} outside 0..{aforo}")
        allocations = active[eid]
        confirmed = [r for r in reservas.values() if r.evento_id == eid and sold(r)]
        for r in confirmed:
            held = allocations.get(r.id)
            if held is None:
                bad(f"evento {eid}: CONFIRMADA reservation {r.id} holds no tickets in eventos")
            elif held["cantidad"] != r.cantidad or sorted(held.get("asientos") or []) != sorted(r.asientos):
                bad(f"evento {eid}: reservation {r.id} holds {held} instead of its {r.cantidad} {r.asientos}")
        pending_held = 0
        for rid, held in allocations.items():
            r = reservas.get(rid)
            if r is not None and sold(r):
                continue
            if allow_pending and in_flight(r):
                pending_held += held["cantidad"]
                continue
            bad(f"evento {eid}: tickets {held} are taken by reservation {rid}, which is {r.estado if r else 'unknown'}")
        per_buyer: Counter[str] = Counter()
        for rid, held in allocations.items():
            buyer, r = held.get("usuario_id") or "", reservas.get(rid)
            if buyer:
                per_buyer[buyer] += held["cantidad"]
            if r is not None and buyer and buyer != r.usuario_id:  # none: taken before buyers were named
                bad(f"evento {eid}: reservation {rid} of usuario {r.usuario_id} holds tickets for buyer {buyer!r}")
        if bought[eid] != dict(per_buyer):
            bad(f"evento {eid}: tickets counted per buyer {bought[eid]} are not what they hold {dict(per_buyer)}")
        tickets_sold = sum(r.cantidad for r in confirmed)
        if disponibles + tickets_sold + pending_held != aforo:
            bad(f"evento {eid}: {disponibles} available + {tickets_sold} sold + {pending_held} held != aforo {aforo}")
        seats = Counter(seat for r in confirmed for seat in r.asientos)
        twice = [seat for seat, n in seats.items() if n > 1]
        if twice:
            bad(f"evento {eid}: seats sold twice: {twice}")
        taken = Counter(seat for a in allocations.values() for seat in a.get("asientos") or [])
        available = {seat for seat, holder in holders[eid].items() if holder is None}
        if any(n > 1 for n in taken.values()) or set(taken) & available:
            bad(f"evento {eid}: a seat is taken twice, or taken and available: {dict(taken)}")
        held = {seat: holder for seat, holder in holders[eid].items() if holder is not None}
        if held != {seat: rid for rid, a in allocations.items() for seat in a.get("asientos") or []}:
            bad(f"evento {eid}: the seats' holders {held} are not the allocations' seats")

    # 3: purchase histories, from usuarios' documents.
    recorded: Counter[tuple[str, str]] = Counter()
    async for usuario in mongo[usuarios_db]["usuarios"].find({}, {"historial_compras": 1}):
        for rid in usuario.get("historial_compras") or []:
            recorded[(usuario["_id"], rid)] += 1
    for (uid, rid), n in recorded.items():
        r = reservas.get(rid)
        if n > 1:
            bad(f"usuario {uid}: reservation {rid} appears {n} times in historial_compras")
        if r is not None and sold(r) and r.usuario_id == uid:
            continue
        if allow_pending and in_flight(r):
            continue
        bad(f"usuario {uid}: historial_compras holds {rid}, which is {r.estado if r else 'unknown'}")
    for r in reservas.values():
        if sold(r) and recorded[(r.usuario_id, r.id)] == 0:
            bad(f"CONFIRMADA reservation {r.id} is missing from usuario {r.usuario_id}'s historial_compras")

    # 4: money, from the ledger.
    net: Counter[str] = Counter()
    async for pago in mongo[reservas_db]["pagos"].find({}):
        net[pago["reserva_id"]] += pago["monto"] if pago["tipo"] == "CARGO" else -pago["monto"]
    for rid in set(net) | set(reservas):
        r = reservas.get(rid)
        if r is not None and sold(r):
            expected = r.monto
        elif allow_pending and in_flight(r):
            continue
        else:
            expected = 0
        if net[rid] != expected:
            bad(f"reservation {rid} ({r.estado if r else 'unknown'}): payments net {net[rid]}, expected {expected}")
        if r is not None and r.settled and r.charged != net[rid]:
            bad(f"reservation {rid}: its stream says {r.charged} charged, the ledger {net[rid]}")

    return report


def one_purchase_per_key(report: Report) -> None:
    """A request repeated with its idempotency key never bought twice.

    A key may stand for several reservations only when the earlier ones failed because of an outage
    (FALLIDA with an UNAVAILABLE error, fully undone): a repeat after an outage is a new attempt.
    """
    attempts: defaultdict[tuple[str, str], list[str]] = defaultdict(list)
    for r in report.reservas.values():
        if not retryable(r):
            attempts[(r.usuario_id, r.idempotency_key)].append(f"{r.id} {r.estado} {r.razon}".strip())
    twice = {key: ids for key, ids in attempts.items() if len(ids) > 1}
    assert not twice, f"idempotency keys that stand for several purchases: {twice}"
