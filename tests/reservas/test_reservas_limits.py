"""reservas' limits (issue 8): the message size, the caps of every field, short errors, bounded replies,
amounts that cannot overflow."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from eventflow.reservas.v1 import reservas_pb2 as pb

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
