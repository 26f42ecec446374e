"""The only module that knows how events are stored in MongoDB.

One document per event, in the `eventos` collection:

    {
      "_id": "665f1c...",                 # str(ObjectId): server-generated, sortable by creation
      "nombre": str, "fecha": date, "lugar": str,
      "aforo_total": int, "entradas_disponibles": int, "precio": int, "moneda": str,
      "asientos": [str],                  # the seat map, [] for an unseated event (immutable)
      "asientos_disponibles": [str],      # seats not taken (any order; sorted on the way out)
      "reservas": [                       # the active allocations: what each reserva_id took
        {"reserva_id": str, "cantidad": int, "asientos": [str]}
      ],
      "reservas_liberadas": [str],        # tombstones: reserva_ids that can never take tickets again
    }

Allocations live in an array, matched by value (`reservas.reserva_id`), so any reserva_id string
is safe (no dots or dollars in field names). An allocation is never modified: it is pushed once
(guarded by `$ne` on both arrays) and pulled once (moving its id to `reservas_liberadas` in the
same update). Every inventory change is one atomic update of this single document whose filter
re-checks the condition the change depends on, so no interleaving can break the invariant.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from eventos.domain import Allocation, Evento, NewEvento, ReservaRequest, in_seat_map_order
from infra.mongo import for_reads, for_writes

COLLECTION = "eventos"

#: What a client may see: everything but the reservation bookkeeping.
_PUBLIC = {"reservas": 0, "reservas_liberadas": 0}
_PUBLIC_FIELDS = (
    "nombre", "fecha", "lugar", "aforo_total", "entradas_disponibles", "precio", "moneda",
    "asientos", "asientos_disponibles",
)  # fmt: skip


def _to_evento(doc: Mapping[str, Any]) -> Evento:
    asientos = tuple(doc.get("asientos") or ())
    return Evento(
        id=doc["_id"],
        nombre=doc["nombre"],
        fecha=doc["fecha"],
        lugar=doc["lugar"],
        aforo_total=doc["aforo_total"],
        entradas_disponibles=doc["entradas_disponibles"],
        precio=doc["precio"],
        moneda=doc["moneda"],
        asientos=asientos,
        asientos_disponibles=in_seat_map_order(asientos, doc.get("asientos_disponibles") or ()),
    )


def _to_allocation(doc: Mapping[str, Any]) -> Allocation:
    return Allocation(doc["reserva_id"], doc["cantidad"], tuple(doc.get("asientos") or ()))


class EventoRepository:
    def __init__(self, db: AsyncDatabase) -> None:
        collection = db[COLLECTION]
        self._reads = for_reads(collection)
        self._writes = for_writes(collection)

    async def ensure_indexes(self) -> None:
        await self._writes.create_index([("fecha", ASCENDING), ("_id", ASCENDING)], name="fecha_id")
        await self._writes.create_index(
            [("lugar", ASCENDING), ("fecha", ASCENDING), ("_id", ASCENDING)], name="lugar_fecha_id"
        )

    # --- catalogue ---------------------------------------------------------------------------

    async def add(self, new: NewEvento) -> Evento:
        doc = {
            "_id": str(ObjectId()),
            "nombre": new.nombre,
            "fecha": new.fecha,
            "lugar": new.lugar,
            "aforo_total": new.aforo_total,
            "entradas_disponibles": new.aforo_total,
            "precio": new.precio,
            "moneda": new.moneda,
            "asientos": list(new.asientos),
            "asientos_disponibles": list(new.asientos),
            "reservas": [],
            "reservas_liberadas": [],
        }
        await self._writes.insert_one(doc)
        return _to_evento(doc)

    async def get(self, evento_id: str, *, primary: bool = False) -> Evento | None:
        """One event; `primary` when the caller is about to change it and needs the latest state."""
        collection = self._writes if primary else self._reads
        doc = await collection.find_one({"_id": evento_id}, _PUBLIC)
        return None if doc is None else _to_evento(doc)

    async def list(
        self,
        *,
        lugar: str | None,
        desde: datetime | None,
        hasta: datetime | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Evento]:
        """Events ordered by (fecha, id), those after the position `after` (keyset pagination)."""
        clauses: list[dict[str, Any]] = []
        if lugar is not None:
            clauses.append({"lugar": lugar})
        fecha: dict[str, datetime] = {}
        if desde is not None:
            fecha["$gte"] = desde
        if hasta is not None:
            fecha["$lte"] = hasta
        if fecha:
            clauses.append({"fecha": fecha})
        if after is not None:
            last_fecha, last_id = after
            clauses.append({"$or": [{"fecha": {"$gt": last_fecha}}, {"fecha": last_fecha, "_id": {"$gt": last_id}}]})
        query = {"$and": clauses} if clauses else {}
        cursor = self._reads.find(query, _PUBLIC).sort([("fecha", ASCENDING), ("_id", ASCENDING)]).limit(limit)
        return [_to_evento(doc) async for doc in cursor]

    async def update(self, evento_id: str, changes: Mapping[str, Any], expected_aforo: int) -> Evento | None:
        """Apply `changes` atomically, provided aforo_total is still `expected_aforo`.

        A new aforo_total moves entradas_disponibles by the same difference, and only if that
        leaves it at 0 or more (the tickets taken meanwhile are re-checked in the filter).
        None when nothing matched: the event is gone, its capacity changed, or too many tickets are taken.
        """
        query: dict[str, Any] = {"_id": evento_id, "aforo_total": expected_aforo}
        update: dict[str, Any] = {"$set": dict(changes)}
        new_aforo = changes.get("aforo_total")
        if new_aforo is not None and new_aforo != expected_aforo:
            delta = new_aforo - expected_aforo
            query["entradas_disponibles"] = {"$gte": -delta}
            update["$inc"] = {"entradas_disponibles": delta}
        doc = await self._writes.find_one_and_update(
            query, update, projection=_PUBLIC, return_document=ReturnDocument.AFTER
        )
        return None if doc is None else _to_evento(doc)

    async def delete_if_untaken(self, evento_id: str) -> bool:
        """Delete the event only if no reservation holds tickets of it, in one operation."""
        result = await self._writes.delete_one({"_id": evento_id, "reservas": {"$size": 0}})
        return result.deleted_count == 1

    # --- inventory ---------------------------------------------------------------------------

    async def take(self, request: ReservaRequest) -> Evento | None:
        """Take the tickets (and seats) of `request` for its reserva_id, all or nothing.

        Matches only if the event has enough tickets, every named seat is still available (an
        unseated event only when no seat is named), and this reserva_id neither holds tickets
        nor has given them back. None when nothing matched: see `snapshot_for` to learn why.
        """
        rid = request.reserva_id
        query: dict[str, Any] = {
            "_id": request.evento_id,
            "entradas_disponibles": {"$gte": request.cantidad},
            "reservas.reserva_id": {"$ne": rid},
            "reservas_liberadas": {"$ne": rid},
        }
        update: dict[str, Any] = {
            "$inc": {"entradas_disponibles": -request.cantidad},
            "$push": {"reservas": {"reserva_id": rid, "cantidad": request.cantidad, "asientos": list(request.asientos)}},
        }
        if request.asientos:
            query["asientos_disponibles"] = {"$all": list(request.asientos)}
            update["$pullAll"] = {"asientos_disponibles": list(request.asientos)}
        else:
            query["asientos"] = {"$size": 0}
        doc = await self._writes.find_one_and_update(
            query, update, projection=_PUBLIC, return_document=ReturnDocument.AFTER
        )
        return None if doc is None else _to_evento(doc)

    async def snapshot_for(self, evento_id: str, reserva_id: str) -> tuple[Evento, Allocation | None, bool] | None:
        """The event (from the primary), what `reserva_id` holds of it, and whether it gave tickets back."""
        projection: dict[str, Any] = dict.fromkeys(_PUBLIC_FIELDS, 1)
        projection["reservas"] = {"$elemMatch": {"reserva_id": reserva_id}}
        doc = await self._writes.find_one({"_id": evento_id}, projection)
        if doc is None:
            return None
        held = doc.get("reservas") or []
        released = await self._writes.count_documents({"_id": evento_id, "reservas_liberadas": reserva_id}, limit=1)
        return _to_evento(doc), (_to_allocation(held[0]) if held else None), released > 0

    async def give_back(self, evento_id: str, allocation: Allocation) -> Evento | None:
        """Return what `allocation` took and spend its reserva_id, once. None if it no longer holds them."""
        rid = allocation.reserva_id
        update: dict[str, Any] = {
            "$pull": {"reservas": {"reserva_id": rid}},
            "$addToSet": {"reservas_liberadas": rid},
            "$inc": {"entradas_disponibles": allocation.cantidad},
        }
        if allocation.asientos:
            update["$push"] = {"asientos_disponibles": {"$each": list(allocation.asientos)}}
        doc = await self._writes.find_one_and_update(
            {"_id": evento_id, "reservas.reserva_id": rid}, update, projection=_PUBLIC, return_document=ReturnDocument.AFTER
        )
        return None if doc is None else _to_evento(doc)

    async def spend(self, evento_id: str, reserva_id: str) -> Evento | None:
        """Mark a reserva_id that holds nothing as released, so a late ReservarEntradas of it takes nothing.

        None when the event is gone or the reserva_id took tickets meanwhile.
        """
        doc = await self._writes.find_one_and_update(
            {"_id": evento_id, "reservas.reserva_id": {"$ne": reserva_id}},
            {"$addToSet": {"reservas_liberadas": reserva_id}},
            projection=_PUBLIC,
            return_document=ReturnDocument.AFTER,
        )
        return None if doc is None else _to_evento(doc)

    async def allocations(self, evento_id: str) -> list[Allocation]:
        """The active allocations of an event (from the primary): for audits and invariant checks."""
        doc = await self._writes.find_one({"_id": evento_id}, {"reservas": 1})
        return [] if doc is None else [_to_allocation(a) for a in doc.get("reservas") or []]
