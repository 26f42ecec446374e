"""reservas' limits (issue 8): the message size, the caps of every field, short errors, bounded replies,
amounts that cannot overflow."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from eventflow.reservas.v1 import reservas_pb2 as pb
from infra.errors import InvalidArgument, error_info
from reservas import domain

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


async def test_an_unknown_medio_pago_is_echoed_only_as_a_prefix(stack: World) -> None:
    assert stack.reservas is not None
    error = await _error(stack.reservas.Reservar(_reservar(medio_pago="tok_" + "z" * 60)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_info(error).reason == "UNKNOWN_PAYMENT_METHOD"
    assert "z" * 30 not in error.details()


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
