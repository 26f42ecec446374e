"""reservas' limits (issue 8): the message size, the caps of every field, short errors, bounded replies,
amounts that cannot overflow."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from eventflow.reservas.v1 import reservas_pb2 as pb
from eventflow.reservas.v1 import reservas_pb2_grpc
from infra.errors import InvalidArgument, error_info
from infra.limits import ReplyBudget, field_size
from infra.pagination import PageTokens
from reservas import domain
from reservas.event_store import EventStore
from reservas.mapping import event_to_pb
from reservas.service import ReservasService

from callers import PAGE_TOKEN_KEY, cliente, open_channel
from conftest import World

MIB = 1 << 20


async def _error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_a_request_over_the_message_limit_is_resource_exhausted(stack: World) -> None:
    assert stack.reservas is not None
    request = pb.ReservarRequest(
        usuario_id="u", evento_id="e", cantidad=1, medio_pago="x" * (2 * MIB), idempotency_key="k"
    )
    error = await _error(stack.reservas.Reservar(request))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# --- caps: a huge value is INVALID_ARGUMENT naming the field and its cap, in a short message ------------------

HUGE = "x" * 1_000_000  # under the 1 MiB message limit: it reaches the service
HUGE_UNICODE = "€" * 300_000


def _reservar(**fields: Any) -> pb.ReservarRequest:
    values: dict[str, Any] = {"usuario_id": "u", "evento_id": "e", "cantidad": 1, "medio_pago": "tok_visa",
                              "idempotency_key": "k"}  # fmt: skip
    values.update(fields)
    return pb.ReservarRequest(**values)


def _calls(huge: str) -> list[tuple[str, str, Any]]:
    return [
        ("Reservar", "medio_pago", _reservar(medio_pago=huge)),
        ("Reservar", "usuario_id", _reservar(usuario_id=huge)),
        ("Reservar", "evento_id", _reservar(evento_id=huge)),
        ("Reservar", "idempotency_key", _reservar(idempotency_key=huge)),
        ("Reservar", "asientos", _reservar(asientos=[huge])),
        ("GetReserva", "id", pb.GetReservaRequest(id=huge)),
        ("CancelarReserva", "id", pb.CancelarReservaRequest(id=huge)),
        ("GetHistorialReserva", "reserva_id", pb.GetHistorialReservaRequest(reserva_id=huge)),
        ("ListReservas", "usuario_id", pb.ListReservasRequest(usuario_id=huge)),
        ("ListReservas", "evento_id", pb.ListReservasRequest(evento_id=huge)),
        ("ListReservas", "page_token", pb.ListReservasRequest(page_token=huge)),
        ("GetEstadisticasEvento", "evento_id", pb.GetEstadisticasEventoRequest(evento_id=huge)),
    ]


@pytest.mark.parametrize("huge", [HUGE, HUGE_UNICODE], ids=["ascii", "unicode"])
async def test_every_huge_string_is_invalid_argument_with_a_short_message(stack: World, huge: str) -> None:
    """Issue 8: a 1 MB medio_pago was copied into the error's trailers, and the caller got RESOURCE_EXHAUSTED."""
    assert stack.reservas is not None
    for rpc, field, request in _calls(huge):
        error = await _error(getattr(stack.reservas, rpc)(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (rpc, field, error.code(), error.details()[:200])
        info = error_info(error)
        assert info is not None and info.metadata["field"] == field, (rpc, field, info)
        assert len(error.details()) < 200, (rpc, field, error.details()[:300])
        assert huge[:50] not in error.details(), (rpc, field)
        assert all(len(value) <= 200 for value in info.metadata.values())


class _NoReads:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the store was asked for {name}")


async def test_a_cliente_naming_a_huge_reservation_id_is_refused_without_a_lookup(stack: World) -> None:
    """The access rule of a cliente's reservation RPCs asks whose the reservation is: an id past the cap is no
    reservation's, so the answer (NOT_OWNER, as for any reservation not its own) reads nothing."""
    store = EventStore(stack.db("reservas"))
    store.collection = _NoReads()  # type: ignore[assignment]
    assert await store.owner(HUGE) is None
    async with open_channel(stack.reservas_address, cliente(await stack.usuario())) as channel:
        stub = reservas_pb2_grpc.ReservasServiceStub(channel)
        for rpc, field, request in _calls(HUGE):
            if field not in ("id", "reserva_id"):
                continue
            error = await _error(getattr(stub, rpc)(request))
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, (rpc, error.code())
            assert error_info(error).reason == "NOT_OWNER" and len(error.details()) < 200


async def test_an_unknown_medio_pago_is_not_echoed(stack: World) -> None:
    assert stack.reservas is not None
    error = await _error(stack.reservas.Reservar(_reservar(medio_pago="tok_" + "z" * 60)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_info(error).reason == "UNKNOWN_PAYMENT_METHOD"
    assert "zzz" not in error.details()


# --- money: amounts and totals fit in an int64 ---------------------------------------------------------------


def test_the_largest_amounts_fit_in_an_int64() -> None:
    assert domain.MAX_MONTO == domain.MAX_PRECIO * domain.MAX_CANTIDAD <= domain.MAX_INT64
    assert domain.importe(domain.MAX_PRECIO, domain.MAX_CANTIDAD) == 10**10
    for precio, cantidad in [(domain.MAX_PRECIO + 1, 1), (-1, 1), (1, 0), (1, domain.MAX_CANTIDAD + 1), (2**63, 10)]:
        with pytest.raises(InvalidArgument):
            domain.importe(precio, cantidad)


@pytest.mark.parametrize("cantidad", [0, 11, 2**31 - 1, -(2**31)])
async def test_cantidad_is_from_1_to_10(stack: World, cantidad: int) -> None:
    assert stack.reservas is not None
    error = await _error(stack.reservas.Reservar(_reservar(cantidad=cantidad)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_info(error).metadata["field"] == "cantidad"
    assert "from 1 to 10" in error.details()


async def test_the_dearest_purchase_and_its_statistics_add_up_exactly(stack: World) -> None:
    """Ten tickets at the highest price: 10**10 minor units, charged, counted and cancelled without overflow."""
    usuario = await stack.usuario()
    evento = await stack.evento(aforo=20, precio=domain.MAX_PRECIO)
    first = await stack.reservar(stack.request(usuario, evento.id, cantidad=10))
    second = await stack.reservar(stack.request(usuario, evento.id, cantidad=10))
    assert first.monto == second.monto == 10**10
    await stack.cancelar(second.id)
    stats = await _statistics_once(stack, evento.id, lambda s: s.canceladas == 1 and s.confirmadas == 2)
    assert (stats.entradas_vendidas, stats.recaudado) == (10, 10**10)


async def _statistics_once(stack: World, evento_id: str, done: Any, timeout: float = 30.0) -> pb.EstadisticasEvento:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        stats = await stack.stub.GetEstadisticasEvento(pb.GetEstadisticasEventoRequest(evento_id=evento_id), timeout=10)
        if done(stats):
            return stats
        assert loop.time() < deadline, f"statistics never got there: {stats}"
        await asyncio.sleep(0.1)


# --- GetHistorialReserva: a stream is read a page at a time -------------------------------------------------


async def _historial(stub: Any, reserva_id: str, **fields: Any) -> tuple[list[str], int]:
    """Every event of the stream, following next_page_token; and how many pages it took."""
    tipos, token, pages = [], "", 0
    while True:
        reply = await stub.GetHistorialReserva(
            pb.GetHistorialReservaRequest(reserva_id=reserva_id, page_token=token, **fields), timeout=10
        )
        tipos.extend(f"{e.version}:{e.tipo}" for e in reply.eventos)
        pages, token = pages + 1, reply.next_page_token
        if not token:
            return tipos, pages


async def test_the_audit_trail_is_paged(stack: World) -> None:
    usuario = await stack.usuario()
    evento = await stack.evento()
    reserva = await stack.reservar(stack.request(usuario, evento.id))
    whole, pages = await _historial(stack.stub, reserva.id)
    assert pages == 1 and len(whole) == reserva.version
    paged, pages = await _historial(stack.stub, reserva.id, page_size=3)
    assert paged == whole and pages == -(-len(whole) // 3)
    first = await stack.stub.GetHistorialReserva(pb.GetHistorialReservaRequest(reserva_id=reserva.id, page_size=3))
    other = await stack.reservar(stack.request(usuario, evento.id))
    token = first.next_page_token
    tampered = token[:-1] + ("1" if token.endswith("0") else "0")  # one character changed, whatever it was
    for forged in (tampered, "garbage"):
        error = await _error(stack.stub.GetHistorialReserva(
            pb.GetHistorialReservaRequest(reserva_id=reserva.id, page_token=forged)))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_info(error).reason == "INVALID_PAGE_TOKEN"
    error = await _error(stack.stub.GetHistorialReserva(  # another reservation's token
        pb.GetHistorialReservaRequest(reserva_id=other.id, page_token=first.next_page_token)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_page_of_the_audit_trail_is_bounded_by_bytes(stack: World) -> None:
    usuario = await stack.usuario()
    evento = await stack.evento()
    reserva = await stack.reservar(stack.request(usuario, evento.id))
    store = EventStore(stack.db("reservas"))
    events = await store.load(reserva.id)
    largest = max(event_to_pb(e).ByteSize() for e in events)
    budget = ReplyBudget(limit=largest * 2 + 8, size_of=lambda e: event_to_pb(e).ByteSize())
    service = ReservasService(
        store=store, keys=None, driver=None, saga=None, eventos=None, payments=None, gate=None,  # type: ignore[arg-type]
        tokens=PageTokens(PAGE_TOKEN_KEY), historial_budget=budget, wait_seconds=1.0,
    )
    seen, token, pages = [], "", 0
    while True:
        page, token = await service.get_historial(reserva.id, page_size=500, page_token=token)
        assert page and sum(field_size(event_to_pb(e).ByteSize()) for e in page) <= budget.limit
        seen.extend(e.version for e in page)
        pages += 1
        if not token:
            break
    assert seen == [e.version for e in events] and pages >= len(events) // 3
