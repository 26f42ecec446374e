"""Payments: the gateway interface the saga talks to, and a simulated gateway with a ledger.

The ledger is the collection "pagos" in reservas' MongoDB, one document per movement:
`{_id, reserva_id, tipo: CARGO | REEMBOLSO, monto, moneda, medio_pago, ocurrido}`. A unique
index on (reserva_id, tipo) makes both movements idempotent per reservation: whatever
the retries and races, a reservation is charged at most once and refunded at most once
(the refund is the whole charge, so the net is then zero). Amounts are integers in minor
units (cents).

The simulated gateway behaves like a payment provider's test cards:
- `tok_visa`: approved;
- `tok_declined`: declined (PaymentDeclined), nothing recorded;
- `tok_slow`: approved after `slow_seconds`;
- `tok_timeout`: the charge IS recorded, but the answer never comes: after `timeout_seconds`
  the caller gets PaymentTimeout and must settle from `entries()` (refund if charged). It
  times out on every call, retries included, as a card that always hangs would.

A refund of a reservation that was never charged leaves a void (`anulado`, amount 0) in the
charge's place, so a charge that arrives afterwards is refused (PaymentVoided) rather than taken:
a process whose saga was taken over and undone by another cannot charge the buyer behind it.
A ledger that does not answer raises LedgerUnavailable (never pymongo's errors): the payment step failed.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from pymongo import ASCENDING, IndexModel, InsertOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from infra.errors import DomainError, FailedPrecondition, InvalidArgument, Unavailable
from infra.group_commit import GroupWriter
from infra.mongo import for_writes, store_errors_as
from reservas.domain import TipoPago

COLLECTION = "pagos"
KNOWN_TOKENS = frozenset({"tok_visa", "tok_declined", "tok_slow", "tok_timeout"})


def validate_token(medio_pago: str) -> None:
    """InvalidArgument unless `medio_pago` is one of the known test tokens."""
    if medio_pago not in KNOWN_TOKENS:
        # The value is not echoed: a payment credential (a card number pasted by mistake, say) would reach the
        # reservation's recorded failure and the logs with it.
        raise InvalidArgument(
            f"medio_pago must be one of {', '.join(sorted(KNOWN_TOKENS))}; "
            f"got another value ({len(medio_pago)} characters)",
            reason="UNKNOWN_PAYMENT_METHOD",
            metadata={"field": "medio_pago"},
        )


class PaymentDeclined(FailedPrecondition):
    """The gateway refused the charge; nothing was taken."""

    reason = "PAYMENT_DECLINED"


class PaymentVoided(FailedPrecondition):
    """The reservation's payment was voided before this charge landed (its purchase was undone): nothing taken."""

    reason = "PAYMENT_VOIDED"


class PaymentTimeout(DomainError):
    """The gateway did not answer in time: whether it charged is unknown until the ledger is read."""

    reason = "PAYMENT_TIMEOUT"


class LedgerUnavailable(Unavailable):
    """The ledger (in reservas' database) did not answer: the payment step failed, and its purchase is undone."""

    reason = "MONGODB_UNAVAILABLE"


def _ledger_unavailable() -> LedgerUnavailable:
    return LedgerUnavailable("reservas' database failed during the purchase")


@dataclass(frozen=True)
class LedgerEntry:
    id: str
    reserva_id: str
    tipo: TipoPago
    monto: int
    moneda: str
    ocurrido: datetime
    #: A void in the charge's place: the purchase was undone before anything was charged, so a charge
    #: that arrives later (from a process that lost the saga) collides with it and is refused.
    anulado: bool = False


class PaymentGateway(Protocol):
    def check_medio_pago(self, medio_pago: str) -> None:
        """InvalidArgument (UNKNOWN_PAYMENT_METHOD) unless this gateway takes `medio_pago`; asks nothing."""
        ...

    async def charge(self, reserva_id: str, monto: int, moneda: str, medio_pago: str) -> LedgerEntry: ...

    async def refund(self, reserva_id: str) -> LedgerEntry | None: ...

    async def entries(self, reserva_id: str) -> list[LedgerEntry]: ...


def _not_voided(entry: LedgerEntry) -> LedgerEntry:
    if entry.anulado:
        raise PaymentVoided(
            "this purchase was undone before its payment went through; nothing was charged",
            metadata={"reserva_id": entry.reserva_id},
        )
    return entry


def _now() -> datetime:
    """Now, at MongoDB's precision (milliseconds), so an entry equals itself read back."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _from_document(doc: dict[str, Any]) -> LedgerEntry:
    ocurrido: datetime = doc["ocurrido"]
    if ocurrido.tzinfo is None:  # a client without tz_aware=True
        ocurrido = ocurrido.replace(tzinfo=UTC)
    return LedgerEntry(
        id=doc["_id"],
        reserva_id=doc["reserva_id"],
        tipo=TipoPago(doc["tipo"]),
        monto=int(doc["monto"]),
        moneda=doc["moneda"],
        ocurrido=ocurrido,
        anulado=bool(doc.get("anulado", False)),
    )


class SimulatedGateway:
    """A PaymentGateway whose "bank" is the ledger collection itself."""

    def __init__(self, db: AsyncDatabase, *, slow_seconds: float = 3.0, timeout_seconds: float = 2.0) -> None:
        self.collection = for_writes(db[COLLECTION])  # money: primary, majority; reads see our own writes
        self.writer = GroupWriter(self.collection)  # concurrent sagas' movements go in one bulk write
        self.slow_seconds = slow_seconds
        self.timeout_seconds = timeout_seconds

    async def ensure_indexes(self) -> None:
        await self.collection.create_indexes(
            [IndexModel([("reserva_id", ASCENDING), ("tipo", ASCENDING)], unique=True, name="one_per_tipo")]
        )

    def check_medio_pago(self, medio_pago: str) -> None:
        validate_token(medio_pago)

    async def charge(self, reserva_id: str, monto: int, moneda: str, medio_pago: str) -> LedgerEntry:
        """Charge `monto` once per reservation; a repeat answers the first charge and records nothing."""
        validate_token(medio_pago)
        if isinstance(monto, bool) or not isinstance(monto, int) or monto < 0:
            raise InvalidArgument(
                f"monto must be a non-negative integer amount in minor units; got {monto!r}",
                metadata={"field": "monto"},
            )
        if medio_pago == "tok_declined":
            raise PaymentDeclined(
                "the payment was declined by the card issuer; use another payment method",
                metadata={"reserva_id": reserva_id},
            )
        if medio_pago == "tok_timeout":
            _not_voided(await self._record(reserva_id, TipoPago.CARGO, monto, moneda, medio_pago))
            await asyncio.sleep(self.timeout_seconds)
            raise PaymentTimeout(
                f"the payment gateway did not answer within {self.timeout_seconds:g}s; the outcome is unknown",
                metadata={"reserva_id": reserva_id},
            )
        if medio_pago == "tok_slow":
            await asyncio.sleep(self.slow_seconds)
        # Insert first: the unique (reserva_id, tipo) makes a repeat collide, and only then is it read.
        return _not_voided(await self._record(reserva_id, TipoPago.CARGO, monto, moneda, medio_pago))

    async def refund(self, reserva_id: str) -> LedgerEntry | None:
        """Give back the charge once; a repeat answers the first refund. None when nothing was charged."""
        charge = await self._find(reserva_id, TipoPago.CARGO)
        if charge is None:
            # Nothing charged: void the charge's place, so a charge still on its way (a process that lost
            # the saga's lease and does not know it yet) collides and is refused instead of taking money.
            charge = await self._record(reserva_id, TipoPago.CARGO, 0, "", None, anulado=True)
        if charge.anulado:
            return None
        return await self._record(reserva_id, TipoPago.REEMBOLSO, charge.monto, charge.moneda, None)

    async def entries(self, reserva_id: str) -> list[LedgerEntry]:
        """The reservation's movements, oldest first (a charge always precedes its refund)."""
        with store_errors_as(_ledger_unavailable):
            found = [_from_document(doc) async for doc in self.collection.find({"reserva_id": reserva_id})]
        return sorted(found, key=lambda e: (e.ocurrido, e.tipo is TipoPago.REEMBOLSO))

    async def _find(self, reserva_id: str, tipo: TipoPago) -> LedgerEntry | None:
        with store_errors_as(_ledger_unavailable):
            doc = await self.collection.find_one({"reserva_id": reserva_id, "tipo": str(tipo)})
        return None if doc is None else _from_document(doc)

    async def _record(
        self, reserva_id: str, tipo: TipoPago, monto: int, moneda: str, medio_pago: str | None, *, anulado: bool = False
    ) -> LedgerEntry:
        """Insert the movement, or answer the one a concurrent call (or an earlier attempt) inserted."""
        entry = LedgerEntry(uuid.uuid4().hex, reserva_id, tipo, monto, moneda, _now(), anulado)
        doc = {
            "_id": entry.id,
            "reserva_id": reserva_id,
            "tipo": str(tipo),
            "monto": monto,
            "moneda": moneda,
            "ocurrido": entry.ocurrido,
        }
        if medio_pago is not None:
            doc["medio_pago"] = medio_pago
        if anulado:
            doc["anulado"] = True
        with store_errors_as(_ledger_unavailable):
            try:
                await self.writer.write([InsertOne(doc)])
            except DuplicateKeyError:
                existing = await self._find(reserva_id, tipo)
                if existing is None:  # pragma: no cover - the unique index guarantees it exists
                    raise
                return existing
        return entry
