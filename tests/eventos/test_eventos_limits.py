"""eventos' limits (issue 8): the message size, the caps of every field, short errors, bounded replies,
big seat maps (written as rows, read in pages), and money and counts that cannot overflow."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from eventflow.eventos.v1 import eventos_pb2 as pb

MIB = 1 << 20


async def _error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_a_request_over_the_message_limit_is_resource_exhausted(eventos) -> None:
    error = await _error(eventos.create(nombre="x" * (2 * MIB)))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    seats = [f"S-{i}" for i in range(200_000)]  # a seat map as labels, bigger than a message
    error = await _error(eventos.create(asientos=seats, aforo_total=0))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
