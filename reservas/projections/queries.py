"""The read side's queries: ListReservas and GetEstadisticasEvento, from the read models only.

They read with a secondary-preferred preference (reads scale apart from writes) and never
touch the event store. Each answer carries `actualizado_hasta`, the checkpoint's instant, read
BEFORE the data in one causally consistent session: the data is at least that current.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from infra import pagination
from infra.limits import ReplyBudget, check_length
from infra.mongo import for_reads
from infra.pagination import PageTokens
from reservas.domain import MAX_ID, Estado, Reserva, check_text
from reservas.projections.checkpoint import Checkpoints
from reservas.projections.read_models import COUNTERS, STATS, VIEWS, reserva_from_view

NEWEST_FIRST = [("creada", DESCENDING), ("_id", DESCENDING)]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ReservasPage:
    reservas: list[Reserva]
    next_page_token: str
    actualizado_hasta: datetime | None


@dataclass(frozen=True)
class Estadisticas:
    evento_id: str
    solicitadas: int = 0
    confirmadas: int = 0
    fallidas: int = 0
    canceladas: int = 0
    entradas_vendidas: int = 0
    recaudado: int = 0
    actualizado_hasta: datetime | None = None

    @property
    def tasa_conversion(self) -> float:
        return self.confirmadas / self.solicitadas if self.solicitadas else 0.0


def _millis(value: datetime) -> int:
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    return (value - _EPOCH) // timedelta(milliseconds=1)


def _position_filter(position: dict[str, Any]) -> dict[str, Any]:
    """Strictly after `position` in (creada desc, _id desc) order."""
    try:
        creada = _EPOCH + timedelta(milliseconds=int(position["c"]))
        last_id = str(position["i"])
    except (KeyError, TypeError, ValueError, OverflowError):
        raise pagination.invalid_token() from None
    return {"$or": [{"creada": {"$lt": creada}}, {"creada": creada, "_id": {"$lt": last_id}}]}


class ReservasQueries:
    def __init__(self, db: AsyncDatabase, tokens: PageTokens, budget: ReplyBudget[Reserva]) -> None:
        """`budget`: the bytes a page of reservations may take in a reply (see infra.limits)."""
        self.client = db.client
        self.tokens = tokens
        self.budget = budget
        self.views = for_reads(db[VIEWS])
        self.stats = for_reads(db[STATS])
        self.checkpoints = Checkpoints(db)

    async def list_reservas(
        self,
        usuario_id: str = "",
        evento_id: str = "",
        estado: Estado | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> ReservasPage:
        """Reservations matching every filter given, newest first (creada, then id, descending)."""
        check_length("usuario_id", usuario_id, MAX_ID)
        check_length("evento_id", evento_id, MAX_ID)
        size = pagination.page_size(page_size)
        query: dict[str, Any] = {}
        if usuario_id:
            query["usuario_id"] = usuario_id
        if evento_id:
            query["evento_id"] = evento_id
        if estado is not None:
            query["estado"] = str(estado)
        # A token only continues the query it was issued for.
        scope = f"ListReservas|{usuario_id}|{evento_id}|{estado or ''}"
        position = self.tokens.decode(page_token, scope)
        if position is not None:
            query = {"$and": [query, _position_filter(position)]} if query else _position_filter(position)
        async with self.client.start_session(causal_consistency=True) as session:
            hasta = await self.checkpoints.hasta(session)
            cursor = self.views.find(query, session=session).sort(NEWEST_FIRST).limit(size + 1)
            docs = [doc async for doc in cursor]
        found = [reserva_from_view(d) for d in docs]
        # At most `size`, and no more than fit in the reply's bytes: the next page starts after the last.
        reservas = found[: min(size, self.budget.fitting(found))]
        next_token = ""
        if len(found) > len(reservas):
            last = docs[len(reservas) - 1]
            next_token = self.tokens.encode({"c": _millis(last["creada"]), "i": last["_id"]}, scope)
        return ReservasPage(reservas, next_token, hasta)

    async def estadisticas_evento(self, evento_id: str) -> Estadisticas:
        """An event's sales figures; zeros for an event with no reservations."""
        check_text("evento_id", evento_id, MAX_ID)
        async with self.client.start_session(causal_consistency=True) as session:
            hasta = await self.checkpoints.hasta(session)
            doc = await self.stats.find_one({"_id": evento_id}, session=session) or {}
        counters = {name: int(doc.get(name, 0)) for name in COUNTERS}
        return Estadisticas(evento_id=evento_id, actualizado_hasta=hasta, **counters)
