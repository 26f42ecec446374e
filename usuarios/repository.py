"""Usuarios in MongoDB: the only module that knows their document shape.

One document per usuario in the `usuarios` collection:
`{_id, tipo_documento, nro_documento, nombre, apellido, email, historial_compras, compras_anuladas, creado, orden}`
(`compras_anuladas`: the reservations whose purchase was annulled, never to be recorded again).
`creado` is the creation time; `orden` its microseconds since the epoch, strictly increasing
within a process, so (orden, _id) lists usuarios oldest first and serves as the page cursor.
Unique indexes enforce one usuario per email and per (tipo_documento, nro_documento); a
violation becomes EmailTaken or DocumentoTaken. Every change is one atomic single-document
operation, so concurrent retries and races (RegistrarCompra against DeleteUsuario) stay correct.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from infra.mongo import for_reads, for_writes
from usuarios.domain import DocumentoTaken, EmailTaken, PurchaseAnnulled, Usuario

COLLECTION = "usuarios"
#: A page cursor: the (orden, id) of the last usuario of the previous page.
Cursor = tuple[int, str]

INDEXES = [
    IndexModel([("tipo_documento", ASCENDING), ("nro_documento", ASCENDING)], unique=True, name="documento_unico"),
    IndexModel([("email", ASCENDING)], unique=True, name="email_unico"),
    IndexModel([("orden", ASCENDING), ("_id", ASCENDING)], name="orden"),
]


class DeleteOutcome(enum.Enum):
    DELETED = "deleted"
    NOT_FOUND = "not_found"
    HAS_PURCHASES = "has_purchases"


def to_document(usuario: Usuario, creado: datetime, orden: int) -> dict[str, Any]:
    return {
        "_id": usuario.id,
        "tipo_documento": usuario.tipo_documento,
        "nro_documento": usuario.nro_documento,
        "nombre": usuario.nombre,
        "apellido": usuario.apellido,
        "email": usuario.email,
        "historial_compras": list(usuario.historial_compras),
        "creado": creado,
        "orden": orden,
    }


def from_document(doc: Mapping[str, Any]) -> Usuario:
    return Usuario(
        id=doc["_id"],
        tipo_documento=doc["tipo_documento"],
        nro_documento=doc["nro_documento"],
        nombre=doc["nombre"],
        apellido=doc["apellido"],
        email=doc["email"],
        historial_compras=tuple(doc.get("historial_compras", ())),
    )


def taken_error(error: DuplicateKeyError, values: Mapping[str, str]) -> EmailTaken | DocumentoTaken | None:
    """Which uniqueness rule a duplicate-key error broke, as a domain error (None: neither)."""
    details = error.details or {}
    keys = set(details.get("keyPattern") or {})
    message = str(details.get("errmsg", error))
    if "email" in keys or (not keys and "email_unico" in message):
        return EmailTaken(values.get("email", ""))
    if "nro_documento" in keys or (not keys and "documento_unico" in message):
        key_value = details.get("keyValue") or values
        return DocumentoTaken(key_value.get("tipo_documento", ""), key_value.get("nro_documento", ""))
    return None


class _Clock:
    """Creation order: microseconds since the epoch, strictly increasing within this process."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> tuple[datetime, int]:
        now = time.time_ns() // 1_000
        self._last = max(now, self._last + 1)
        return datetime.fromtimestamp(self._last / 1_000_000, UTC), self._last


class UsuarioRepository:
    def __init__(self, db: AsyncDatabase, collection: str = COLLECTION) -> None:
        self._collection = db[collection]
        self._reads = for_reads(self._collection)
        self._writes = for_writes(self._collection)
        self._clock = _Clock()
        self._indexed = False
        self._index_lock = asyncio.Lock()

    async def ensure_indexes(self) -> None:
        """Create the indexes once per process (idempotent; writes wait for it so uniqueness always holds)."""
        if self._indexed:
            return
        async with self._index_lock:
            if not self._indexed:
                await self._writes.create_indexes(INDEXES)
                self._indexed = True

    async def add(self, usuario: Usuario) -> Usuario:
        await self.ensure_indexes()
        creado, orden = self._clock.next()
        try:
            await self._writes.insert_one(to_document(usuario, creado, orden))
        except DuplicateKeyError as error:
            raise (taken_error(error, usuario.profile()) or error) from None
        return usuario

    async def get(self, usuario_id: str) -> Usuario | None:
        doc = await self._reads.find_one({"_id": usuario_id})
        return from_document(doc) if doc else None

    async def list_page(self, after: Cursor | None, limit: int) -> list[tuple[Usuario, Cursor]]:
        """Up to `limit` usuarios after the cursor, oldest first, each with its cursor (a page may end after any)."""
        query: dict[str, Any] = {}
        if after is not None:
            orden, last_id = after
            query = {"$or": [{"orden": {"$gt": orden}}, {"orden": orden, "_id": {"$gt": last_id}}]}
        cursor = self._reads.find(query).sort([("orden", ASCENDING), ("_id", ASCENDING)]).limit(limit)
        return [(from_document(doc), (int(doc["orden"]), str(doc["_id"]))) async for doc in cursor]

    async def update(self, usuario_id: str, changes: Mapping[str, str]) -> Usuario | None:
        await self.ensure_indexes()
        try:
            doc = await self._writes.find_one_and_update(
                {"_id": usuario_id}, {"$set": dict(changes)}, return_document=ReturnDocument.AFTER
            )
        except DuplicateKeyError as error:
            raise (taken_error(error, changes) or error) from None
        return from_document(doc) if doc else None

    async def delete_if_no_purchases(self, usuario_id: str) -> tuple[DeleteOutcome, int]:
        """Delete in one step only while historial_compras is empty, so a concurrent purchase is never lost."""
        while True:
            result = await self._writes.delete_one({"_id": usuario_id, "historial_compras.0": {"$exists": False}})
            if result.deleted_count:
                return DeleteOutcome.DELETED, 0
            doc = await self._writes.find_one({"_id": usuario_id}, {"historial_compras": 1})
            if doc is None:
                return DeleteOutcome.NOT_FOUND, 0
            compras = len(doc.get("historial_compras", ()))
            if compras:
                return DeleteOutcome.HAS_PURCHASES, compras
            # The last purchase was annulled between the two reads: try the delete again.

    async def add_compra(self, usuario_id: str, reserva_id: str) -> bool | None:
        """$addToSet: one entry per reserva_id however many times (or how concurrently) it is recorded.

        True when this call added it, False when it was there already, None when there is no such usuario.
        PurchaseAnnulled when the purchase was annulled (`compras_anuladas`): a saga's late RegistrarCompra,
        sent before its owner lost the saga and arriving after the one that took it over undid it, must not
        put a failed reservation back in the history (as a late charge meets a void, and a late take a tombstone).
        """
        changed = await self._change_historial(
            {"_id": usuario_id, "compras_anuladas": {"$ne": reserva_id}}, {"$addToSet": {"historial_compras": reserva_id}}
        )
        if changed is None and await self._writes.count_documents({"_id": usuario_id}, limit=1):
            raise PurchaseAnnulled(usuario_id, reserva_id)
        return changed

    async def remove_compra(self, usuario_id: str, reserva_id: str) -> bool | None:
        """$pull, and remember the reserva_id as annulled so that it is never recorded again (add_compra).
        True when this call removed it, False when it was not there; None when there is no such usuario."""
        annul = {"$pull": {"historial_compras": reserva_id}, "$addToSet": {"compras_anuladas": reserva_id}}
        if await self._change_historial({"_id": usuario_id, "historial_compras": reserva_id}, annul):
            return True
        remembered = await self._change_historial({"_id": usuario_id}, {"$addToSet": {"compras_anuladas": reserva_id}})
        return None if remembered is None else False

    async def _change_historial(self, query: Mapping[str, Any], update: Mapping[str, Any]) -> bool | None:
        # An update, not a findAndModify: the saga needs no copy of a history that grows with every
        # purchase, and SecantusDB's findAndModify costs a scan of the whole collection.
        result = await self._writes.update_one(query, update)
        return None if result.matched_count == 0 else result.modified_count == 1
