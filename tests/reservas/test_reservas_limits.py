"""reservas' limits (issue 8): the message size, the caps of every field, short errors, bounded replies,
amounts that cannot overflow."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from eventflow.reservas.v1 import reservas_pb2 as pb
from infra.errors import error_info

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
