"""The read models and the only module that knows their document shapes.

- `reservas_vista`: one document per reservation, everything a `Reserva` message needs plus its
  stream `version`, indexed for ListReservas' filters, newest first.
- `estadisticas_evento`: per evento_id, counters maintained as the sum of every view's
  contribution (see `contribution`).

`ReadModels.apply` is the one way both change: in ONE transaction it reads the current views,
replaces those whose stored version is lower than the new state's, and adds the difference
between the new and the old views' contributions to the statistics. Applying a state twice, or
an older state after a newer one, changes nothing; two projectors applying the same reservation
at once conflict inside the database and one of them retries against the other's result.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, InsertOne, ReplaceOne, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from infra.mongo import for_writes
from reservas.domain import Estado, Pago, Reserva, TipoPago

VIEWS = "reservas_vista"
STATS = "estadisticas_evento"

#: The counters of an `estadisticas_evento` document.
COUNTERS = ("solicitadas", "confirmadas", "fallidas", "canceladas", "entradas_vendidas", "recaudado")


def view_document(reserva: Reserva) -> dict[str, Any]:
    """A reservation's view: every field of the `Reserva` message, its version, keyed by its id."""
    return {
        "_id": reserva.id,
        "usuario_id": reserva.usuario_id,
        "evento_id": reserva.evento_id,
        "cantidad": reserva.cantidad,
        "asientos": list(reserva.asientos),
        "estado": str(reserva.estado),
        "monto": reserva.monto,
        "moneda": reserva.moneda,
        "motivo": reserva.motivo,
        "razon": reserva.razon,
        "pagos": [{"id": p.id, "tipo": str(p.tipo), "monto": p.monto, "ocurrido": p.ocurrido} for p in reserva.pagos],
        "creada": reserva.creada,
        "actualizada": reserva.actualizada,
        "idempotency_key": reserva.idempotency_key,
        "cancelando": reserva.cancelando,
        "version": reserva.version,
    }


def reserva_from_view(doc: Mapping[str, Any]) -> Reserva:
    """The view as an aggregate value, so `mapping.reserva_to_pb` answers it like GetReserva does."""
    return Reserva(
        id=doc["_id"],
        version=int(doc["version"]),
        usuario_id=doc["usuario_id"],
        evento_id=doc["evento_id"],
        cantidad=int(doc["cantidad"]),
        asientos=tuple(doc.get("asientos", ())),
        medio_pago="",
        idempotency_key=doc.get("idempotency_key", ""),
        estado=Estado(doc["estado"]),
        monto=int(doc.get("monto", 0)),
        moneda=doc.get("moneda", ""),
        motivo=doc.get("motivo", ""),
        razon=doc.get("razon", ""),
        creada=doc.get("creada"),
        actualizada=doc.get("actualizada"),
        pagos=[Pago(p["id"], TipoPago(p["tipo"]), int(p["monto"]), p["ocurrido"]) for p in doc.get("pagos", ())],
        cancelando=bool(doc.get("cancelando", False)),
    )


def contribution(doc: Mapping[str, Any] | None) -> Counter[str]:
    """What one reservation's view adds to its event's statistics."""
    if doc is None:
        return Counter()
    estado = Estado(doc["estado"])
    charged = sum(p["monto"] if p["tipo"] == TipoPago.CARGO else -p["monto"] for p in doc.get("pagos", ()))
    return Counter(
        {
            "solicitadas": 1,
            # Confirmed, including those later cancelled (a cancellation needs a confirmation first).
            "confirmadas": int(estado in (Estado.CONFIRMADA, Estado.CANCELADA)),
            "fallidas": int(estado is Estado.FALLIDA),
            "canceladas": int(estado is Estado.CANCELADA),
            "entradas_vendidas": int(doc["cantidad"]) if estado is Estado.CONFIRMADA else 0,
            "recaudado": int(charged),
        }
    )


def chunks(items: list[str], size: int = 50) -> Iterable[list[str]]:
    """`$in` lists of a bounded length (a long `$in` is slow on some servers, SecantusDB among them)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _newest(reservas: Iterable[Reserva]) -> dict[str, Reserva]:
    newest: dict[str, Reserva] = {}
    for r in reservas:
        if r.id not in newest or newest[r.id].version < r.version:
            newest[r.id] = r
    return newest


class ReadModels:
    """The projector's (and the rebuild's) writes to the read models."""

    def __init__(self, db: AsyncDatabase, session: AsyncClientSession | None = None) -> None:
        self.db = db
        self.views = for_writes(db[VIEWS])
        self.stats = for_writes(db[STATS])
        #: The session the transactions run on (a projector's own, see `SessionRegistry`); None: a pooled one.
        self.session = session

    async def ensure_indexes(self) -> None:
        newest_first = [("creada", DESCENDING), ("_id", DESCENDING)]
        await self.views.create_indexes(
            [
                IndexModel([("usuario_id", ASCENDING), *newest_first], name="usuario_creada"),
                IndexModel([("evento_id", ASCENDING), *newest_first], name="evento_creada"),
                IndexModel([("estado", ASCENDING), *newest_first], name="estado_creada"),
                IndexModel(newest_first, name="creada"),
            ]
        )

    async def _transaction(self, callback: Any) -> Any:
        options = {"read_concern": ReadConcern("snapshot"), "write_concern": WriteConcern("majority")}
        if self.session is not None:
            return await self.session.with_transaction(callback, **options)
        async with self.db.client.start_session() as session:
            return await session.with_transaction(callback, **options)

    async def apply(self, reservas: Iterable[Reserva]) -> int:
        """Bring the views up to these states (only where they are newer); returns how many views changed."""
        newest = _newest(reservas)
        if not newest:
            return 0
        new_docs = {rid: view_document(r) for rid, r in newest.items()}

        async def write(session: AsyncClientSession) -> int:
            old_docs: dict[str, dict[str, Any]] = {}
            for ids in chunks(list(new_docs)):
                async for doc in self.views.find({"_id": {"$in": ids}}, session=session):
                    old_docs[doc["_id"]] = doc
            writes: list[InsertOne[Any] | ReplaceOne[Any]] = []
            deltas: defaultdict[str, Counter[str]] = defaultdict(Counter)
            for rid, new in new_docs.items():
                old = old_docs.get(rid)
                if old is not None and int(old["version"]) >= new["version"]:
                    continue  # already as new or newer: applying it again has no effect
                # A view another projector creates meanwhile makes this transaction conflict and retry.
                writes.append(InsertOne(new) if old is None else ReplaceOne({"_id": rid}, new))
                deltas[new["evento_id"]].update(contribution(new))
                if old is not None:
                    deltas[old["evento_id"]].subtract(contribution(old))
            if writes:
                await self.views.bulk_write(writes, ordered=False, session=session)
            increments = [
                # Every counter, zeros too, so a document holds the same fields however it was reached.
                UpdateOne({"_id": evento_id}, {"$inc": {k: delta[k] for k in COUNTERS}}, upsert=True)
                for evento_id, delta in deltas.items()
                if any(delta.values())
            ]
            if increments:
                await self.stats.bulk_write(increments, ordered=False, session=session)
            return len(writes)

        return int(await self._transaction(write))

    async def clear(self) -> None:
        """Empty both read models in one transaction, so a projector running meanwhile never sees one
        emptied and the other not (it would count a reservation into statistics about to vanish)."""

        async def delete(session: AsyncClientSession) -> None:
            await self.views.delete_many({}, session=session)
            await self.stats.delete_many({}, session=session)

        await self._transaction(delete)

    async def snapshot(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Every view and statistics document, sorted by id (to compare two read models)."""
        views = [d async for d in self.views.find({}).sort("_id", ASCENDING)]
        stats = [d async for d in self.stats.find({}).sort("_id", ASCENDING)]
        return views, stats

