"""The simulated payment gateway against a real MongoDB: test cards, idempotent charges and refunds."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError

from infra.errors import InvalidArgument
from reservas.domain import TipoPago
from reservas.payments import (
    KNOWN_TOKENS,
    PaymentDeclined,
    PaymentVoided,
    PaymentTimeout,
    SimulatedGateway,
    validate_token,
)


@pytest.fixture
async def gateway(mongo_uri: str, db_name: Callable[[str], str]) -> AsyncIterator[SimulatedGateway]:
    client: AsyncMongoClient = AsyncMongoClient(mongo_uri, tz_aware=True)
    name = db_name("reservas")
    gw = SimulatedGateway(client[name], slow_seconds=0.2, timeout_seconds=0.1)
    await gw.ensure_indexes()
    yield gw
    await client.drop_database(name)
    await client.close()


def reserva() -> str:
    return uuid.uuid4().hex


def net(entries: list) -> int:  # noqa: ANN001
    return sum(e.monto if e.tipo is TipoPago.CARGO else -e.monto for e in entries)


def test_validate_token_accepts_the_known_tokens_only() -> None:
    for token in KNOWN_TOKENS:
        validate_token(token)
    for token in ("", "tok_mastercard", "TOK_VISA", "4111 1111 1111 1111"):
        with pytest.raises(InvalidArgument) as raised:
            validate_token(token)
        assert raised.value.reason == "UNKNOWN_PAYMENT_METHOD"
        assert raised.value.metadata == {"field": "medio_pago"}
        assert "tok_visa" in raised.value.message
        # A payment credential is not echoed: the message is recorded with a failed purchase and logged.
        assert (token or "''") not in raised.value.message.replace("tok_visa", "")


async def test_charge_records_one_entry(gateway: SimulatedGateway) -> None:
    r = reserva()
    entry = await gateway.charge(r, 2500, "EUR", "tok_visa")
    assert (entry.reserva_id, entry.tipo, entry.monto, entry.moneda) == (r, TipoPago.CARGO, 2500, "EUR")
    assert await gateway.entries(r) == [entry]


async def test_charging_twice_records_one_charge(gateway: SimulatedGateway) -> None:
    r = reserva()
    first = await gateway.charge(r, 2500, "EUR", "tok_visa")
    assert await gateway.charge(r, 2500, "EUR", "tok_visa") == first
    assert await gateway.entries(r) == [first]


async def test_ten_concurrent_charges_record_one(gateway: SimulatedGateway) -> None:
    r = reserva()
    results = await asyncio.gather(*(gateway.charge(r, 1000, "EUR", "tok_visa") for _ in range(10)))
    assert len({e.id for e in results}) == 1
    assert await gateway.entries(r) == [results[0]]


async def test_refund_twice_refunds_once(gateway: SimulatedGateway) -> None:
    r = reserva()
    charge = await gateway.charge(r, 4200, "EUR", "tok_visa")
    refund = await gateway.refund(r)
    assert refund is not None
    assert (refund.tipo, refund.monto, refund.moneda) == (TipoPago.REEMBOLSO, 4200, "EUR")
    assert await gateway.refund(r) == refund
    again = await asyncio.gather(*(gateway.refund(r) for _ in range(5)))
    assert all(e == refund for e in again)
    assert await gateway.entries(r) == [charge, refund]
    assert net(await gateway.entries(r)) == 0


async def test_refund_with_nothing_charged_is_none_and_voids_a_later_charge(gateway: SimulatedGateway) -> None:
    r = reserva()
    assert await gateway.refund(r) is None
    assert await gateway.refund(r) is None  # idempotent
    [void] = await gateway.entries(r)
    assert (void.tipo, void.monto, void.anulado) == (TipoPago.CARGO, 0, True)
    # A charge that arrives after the purchase was undone (from a process that lost the saga) takes nothing.
    with pytest.raises(PaymentVoided) as raised:
        await gateway.charge(r, 1000, "EUR", "tok_visa")
    assert raised.value.reason == "PAYMENT_VOIDED"
    assert [(e.monto, e.anulado) for e in await gateway.entries(r)] == [(0, True)]


async def test_declined_records_nothing(gateway: SimulatedGateway) -> None:
    r = reserva()
    with pytest.raises(PaymentDeclined) as raised:
        await gateway.charge(r, 1000, "EUR", "tok_declined")
    assert raised.value.reason == "PAYMENT_DECLINED"
    assert await gateway.entries(r) == []
    assert await gateway.refund(r) is None


async def test_unknown_token_records_nothing(gateway: SimulatedGateway) -> None:
    r = reserva()
    with pytest.raises(InvalidArgument):
        await gateway.charge(r, 1000, "EUR", "tok_unknown")
    assert await gateway.entries(r) == []


async def test_amount_must_be_a_non_negative_integer(gateway: SimulatedGateway) -> None:
    for bad in (-1, 10.5, "100"):
        with pytest.raises(InvalidArgument) as raised:
            await gateway.charge(reserva(), bad, "EUR", "tok_visa")  # type: ignore[arg-type]
        assert raised.value.metadata == {"field": "monto"}


async def test_timeout_records_the_charge_and_the_caller_settles_from_the_ledger(gateway: SimulatedGateway) -> None:
    r = reserva()
    with pytest.raises(PaymentTimeout) as raised:
        await gateway.charge(r, 3000, "EUR", "tok_timeout")
    assert raised.value.reason == "PAYMENT_TIMEOUT"
    [charge] = await gateway.entries(r)
    assert (charge.tipo, charge.monto) == (TipoPago.CARGO, 3000)
    with pytest.raises(PaymentTimeout):  # a retry hangs too, and charges nothing more
        await gateway.charge(r, 3000, "EUR", "tok_timeout")
    assert await gateway.entries(r) == [charge]
    refund = await gateway.refund(r)
    assert refund is not None and refund.monto == 3000
    assert net(await gateway.entries(r)) == 0


async def test_slow_is_approved(gateway: SimulatedGateway) -> None:
    r = reserva()
    entry = await gateway.charge(r, 1500, "EUR", "tok_slow")
    assert entry.tipo is TipoPago.CARGO
    assert await gateway.entries(r) == [entry]


async def test_reservations_are_independent(gateway: SimulatedGateway) -> None:
    a, b = reserva(), reserva()
    await gateway.charge(a, 100, "EUR", "tok_visa")
    await gateway.charge(b, 200, "EUR", "tok_visa")
    await gateway.refund(a)
    assert net(await gateway.entries(a)) == 0
    assert net(await gateway.entries(b)) == 200


async def test_the_ledger_refuses_a_second_charge_for_a_reservation(gateway: SimulatedGateway) -> None:
    r = reserva()
    await gateway.charge(r, 100, "EUR", "tok_visa")
    doc = {"_id": uuid.uuid4().hex, "reserva_id": r, "tipo": "CARGO", "monto": 100, "moneda": "EUR"}
    with pytest.raises(DuplicateKeyError):
        await gateway.collection.insert_one(doc)
