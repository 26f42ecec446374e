"""Bad seat choices are refused before anything is recorded, as the README says: no reservation, no reserva_id.

(A seat the event does not have is found only when eventos is asked for it, after the log's first write: that
purchase ends FALLIDA, recorded, with its reserva_id.)
"""

from __future__ import annotations

import grpc
import pytest
from conftest import CONFIRMADA, FALLIDA, World


@pytest.mark.parametrize(
    ("seated", "asientos", "cantidad"),
    [(False, ["A-1"], 1), (True, [], 1), (True, ["A-1", "A-1"], 2), (True, ["A-1"], 2)],
    ids=["seats for an unseated event", "no seats for a seated one", "a seat twice",
         "cantidad not the number of seats"],
)  # fmt: skip
async def test_a_bad_seat_choice_records_nothing(stack: World, seated: bool, asientos: list[str], cantidad: int) -> None:
    usuario = await stack.usuario()
    evento = await stack.evento(asientos=["A-1", "A-2"] if seated else (), aforo=2)
    request = stack.request(usuario, evento.id, cantidad=cantidad, asientos=asientos)
    failure = await stack.fails(stack.reservar(request))
    assert failure.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION), failure
    assert "reserva_id" not in failure.metadata, failure
    assert await stack.db("reservas")["reserva_eventos"].count_documents({}) == 0
    assert (await stack.get_evento(evento.id)).entradas_disponibles == 2
    # The same request again is refused the same way, still recording nothing; a good choice buys.
    again = await stack.fails(stack.reservar(request))
    assert (again.code, again.reason, again.metadata) == (failure.code, failure.reason, failure.metadata)
    assert await stack.db("reservas")["reserva_eventos"].count_documents({}) == 0
    good = stack.request(usuario, evento.id, cantidad=1, asientos=["A-1"] if seated else [])
    assert (await stack.reservar(good)).estado == CONFIRMADA


async def test_a_seat_the_event_does_not_have_is_found_by_eventos_and_recorded(stack: World) -> None:
    usuario = await stack.usuario()
    evento = await stack.evento(asientos=["A-1", "A-2"])
    failure = await stack.fails(stack.reservar(stack.request(usuario, evento.id, cantidad=1, asientos=["Z-99"])))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_SEAT"), failure
    assert (await stack.get(failure.metadata["reserva_id"])).estado == FALLIDA
    assert (await stack.get_evento(evento.id)).entradas_disponibles == 2
