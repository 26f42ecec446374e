"""ReservarEntradas / LiberarEntradas: validation, idempotency, and the concurrency contract.

The invariant is checked after every scenario: 0 <= entradas_disponibles <= aforo_total,
entradas_disponibles + tickets held by reservations == aforo_total, no seat held twice.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import field_mask_pb2

from eventflow.eventos.v1 import eventos_pb2
from infra.errors import error_info

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
NOT_FOUND = grpc.StatusCode.NOT_FOUND
SEATS = ["A-1", "A-2", "A-3", "B-1", "B-2"]


LIMIT = "LIMIT_PER_BUYER_EXCEEDED"


async def set_limit(eventos, evento_id: str, max_por_usuario: int) -> eventos_pb2.Evento:
    """UpdateEvento of max_por_usuario alone."""
    evento = eventos_pb2.Evento(id=evento_id, max_por_usuario=max_por_usuario)
    mask = field_mask_pb2.FieldMask(paths=["max_por_usuario"])
    return await eventos.stub.UpdateEvento(eventos_pb2.UpdateEventoRequest(evento=evento, update_mask=mask))


async def outcomes(eventos, calls) -> tuple[list[object], list[str]]:
    """Run the calls concurrently: (successful answers, reasons of the failures)."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException)]
    reasons = [eventos.reason(r) for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) + len(reasons) == len(results), [r for r in results if isinstance(r, BaseException)]
    return ok, reasons


class TestReservar:
    async def test_takes_and_answers_the_event(self, eventos) -> None:
        created = await eventos.create(aforo_total=10)
        after = await eventos.reservar(created.id, "r1", 3)
        assert after.entradas_disponibles == 7
        after = await eventos.reservar(created.id, "r2", 7)
        assert after.entradas_disponibles == 0
        await eventos.check_invariant(created.id)

    async def test_sold_out_takes_nothing(self, eventos) -> None:
        created = await eventos.create(aforo_total=3)
        await eventos.reservar(created.id, "r1", 2)
        error = await eventos.fails(eventos.reservar(created.id, "r2", 2), PRECONDITION, "SOLD_OUT")
        assert "1" in error.details()
        final = await eventos.check_invariant(created.id)
        assert final.entradas_disponibles == 1

    async def test_seats(self, eventos) -> None:
        created = await eventos.create(aforo_total=0, asientos=SEATS)
        taken = await eventos.reservar(created.id, "r1", 2, ["B-1", "A-2"])
        assert taken.entradas_disponibles == 3
        after = await eventos.check_invariant(created.id)
        assert list(after.asientos_disponibles) == ["A-1", "A-3", "B-2"]

    async def test_seat_all_or_nothing(self, eventos) -> None:
        created = await eventos.create(aforo_total=0, asientos=SEATS)
        await eventos.reservar(created.id, "r1", 1, ["A-2"])
        error = await eventos.fails(eventos.reservar(created.id, "r2", 2, ["A-1", "A-2"]), PRECONDITION, "SEAT_TAKEN")
        assert error_info(error).metadata["asientos"] == "A-2"  # type: ignore[union-attr]
        final = await eventos.check_invariant(created.id)
        assert "A-1" in final.asientos_disponibles and final.entradas_disponibles == 4
        # r2 took nothing, so it may still take free seats.
        await eventos.reservar(created.id, "r2", 2, ["A-1", "A-3"])
        await eventos.check_invariant(created.id)

    @pytest.mark.parametrize(
        ("cantidad", "asientos", "seated", "reason"),
        [
            (0, [], False, "VALIDATION_FAILED"),
            (-1, [], False, "VALIDATION_FAILED"),
            (1, ["A-1"], False, "SEATS_NOT_ALLOWED"),  # seats for an unseated event
            (1, [], True, "SEATS_REQUIRED"),  # no seats for a seated event
            (2, ["A-1"], True, "VALIDATION_FAILED"),  # fewer seats than cantidad
            (2, ["A-1", "A-1"], True, "VALIDATION_FAILED"),  # repeated seat
            (2, ["A-1", "Z-9"], True, "UNKNOWN_SEAT"),
        ],
    )
    async def test_validation(self, eventos, cantidad: int, asientos: list[str], seated: bool, reason: str) -> None:
        created = await (eventos.create(aforo_total=0, asientos=SEATS) if seated else eventos.create())
        await eventos.fails(eventos.reservar(created.id, "r1", cantidad, asientos), INVALID, reason)
        final = await eventos.check_invariant(created.id)
        assert final.entradas_disponibles == final.aforo_total

    async def test_ids_and_not_found(self, eventos) -> None:
        created = await eventos.create()
        await eventos.fails(eventos.reservar("", "r1"), INVALID, "VALIDATION_FAILED")
        await eventos.fails(eventos.reservar(created.id, ""), INVALID, "VALIDATION_FAILED")
        await eventos.fails(eventos.reservar("no-such-evento", "r1"), NOT_FOUND, "EVENTO_NOT_FOUND")
        await eventos.fails(eventos.liberar("", "r1"), INVALID, "VALIDATION_FAILED")
        await eventos.fails(eventos.liberar(created.id, ""), INVALID, "VALIDATION_FAILED")
        await eventos.fails(eventos.liberar("no-such-evento", "r1"), NOT_FOUND, "EVENTO_NOT_FOUND")

    async def test_any_reserva_id_string_is_safe(self, eventos) -> None:
        created = await eventos.create()
        odd = ["a.b", "$set", "x.$[]", "ñandú 🎟", "reservas.0"]
        for rid in odd:
            await eventos.reservar(created.id, rid, 1)
            await eventos.reservar(created.id, rid, 1)  # idempotent
        final = await eventos.check_invariant(created.id)
        assert final.entradas_disponibles == 10 - len(odd)
        for rid in odd:
            await eventos.liberar(created.id, rid)
        assert (await eventos.check_invariant(created.id)).entradas_disponibles == 10


class TestIdempotency:
    async def test_retry_takes_nothing_and_answers(self, eventos) -> None:
        created = await eventos.create(aforo_total=0, asientos=SEATS)
        first = await eventos.reservar(created.id, "r1", 2, ["A-1", "A-2"])
        again = await eventos.reservar(created.id, "r1", 2, ["A-2", "A-1"])  # seat order does not matter
        assert again == first
        await eventos.check_invariant(created.id)

    async def test_retry_after_sold_out_still_succeeds(self, eventos) -> None:
        created = await eventos.create(aforo_total=2)
        await eventos.reservar(created.id, "r1", 2)
        assert (await eventos.reservar(created.id, "r1", 2)).entradas_disponibles == 0

    async def test_same_reserva_id_other_tickets(self, eventos) -> None:
        created = await eventos.create(aforo_total=0, asientos=SEATS)
        await eventos.reservar(created.id, "r1", 1, ["A-1"])
        await eventos.fails(eventos.reservar(created.id, "r1", 1, ["A-3"]), PRECONDITION, "RESERVA_MISMATCH")
        await eventos.fails(
            eventos.reservar(created.id, "r1", 2, ["A-1", "A-3"]), PRECONDITION, "RESERVA_MISMATCH"
        )
        plain = await eventos.create()
        await eventos.reservar(plain.id, "r1", 1)
        await eventos.fails(eventos.reservar(plain.id, "r1", 2), PRECONDITION, "RESERVA_MISMATCH")
        await eventos.check_invariant(created.id)
        assert (await eventos.check_invariant(plain.id)).entradas_disponibles == 9

    async def test_concurrent_retries_take_once(self, eventos) -> None:
        created = await eventos.create(aforo_total=10)
        ok, reasons = await outcomes(eventos, [eventos.reservar(created.id, "same", 3) for _ in range(10)])
        assert reasons == [] and len(ok) == 10
        final = await eventos.check_invariant(created.id)
        assert final.entradas_disponibles == 7
        assert len(await eventos.repository.allocations(created.id)) == 1


class TestLiberar:
    async def test_gives_back_once(self, eventos) -> None:
        created = await eventos.create(aforo_total=0, asientos=SEATS)
        await eventos.reservar(created.id, "r1", 2, ["B-2", "A-1"])
        await eventos.reservar(created.id, "r2", 1, ["A-2"])
        back = await eventos.liberar(created.id, "r1")
        assert back.entradas_disponibles == 4
        after = await eventos.check_invariant(created.id)
        assert list(after.asientos_disponibles) == ["A-1", "A-3", "B-1", "B-2"]  # seat-map order
        again = await eventos.liberar(created.id, "r1")
        assert again == back
        await eventos.check_invariant(created.id)

    async def test_concurrent_releases_give_back_once(self, eventos) -> None:
        created = await eventos.create(aforo_total=10)
        await eventos.reservar(created.id, "r1", 4)
        await eventos.reservar(created.id, "r2", 1)
        ok, reasons = await outcomes(eventos, [eventos.liberar(created.id, "r1") for _ in range(10)])
        assert reasons == []
        final = await eventos.check_invariant(created.id)
        assert final.entradas_disponibles == 9

    async def test_released_reserva_id_cannot_take_again(self, eventos) -> None:
        created = await eventos.create()
        await eventos.reservar(created.id, "r1", 2)
        await eventos.liberar(created.id, "r1")
        await eventos.fails(eventos.reservar(created.id, "r1", 2), PRECONDITION, "RESERVA_RELEASED")
        assert (await eventos.check_invariant(created.id)).entradas_disponibles == 10

    async def test_unknown_reserva_id_is_a_noop_that_fences_it(self, eventos) -> None:
        created = await eventos.create()
        await eventos.reservar(created.id, "r1", 2)
        answer = await eventos.liberar(created.id, "never-reserved")
        assert answer.entradas_disponibles == 8
        # A ReservarEntradas that arrives after its compensation (a stale retry) takes nothing.
        await eventos.fails(eventos.reservar(created.id, "never-reserved", 1), PRECONDITION, "RESERVA_RELEASED")
        assert (await eventos.check_invariant(created.id)).entradas_disponibles == 8

    async def test_release_racing_its_reservation(self, eventos) -> None:
        # Whatever the order, the reserva_id ends up holding nothing once both have answered.
        created = await eventos.create()
        for i in range(8):
            await outcomes(eventos, [eventos.reservar(created.id, f"r{i}", 2), eventos.liberar(created.id, f"r{i}")])
            await eventos.liberar(created.id, f"r{i}")
            assert (await eventos.check_invariant(created.id)).entradas_disponibles == 10


class TestConcurrency:
    async def test_fifty_callers_ten_tickets(self, eventos) -> None:
        created = await eventos.create(aforo_total=10)
        ok, reasons = await outcomes(eventos, [eventos.reservar(created.id, f"r{i}", 1) for i in range(60)])
        assert len(ok) == 10
        assert reasons == ["SOLD_OUT"] * 50
        final = await eventos.check_invariant(created.id)
        assert final.entradas_disponibles == 0
        assert len(await eventos.repository.allocations(created.id)) == 10

    async def test_mixed_quantities_never_oversell(self, eventos) -> None:
        created = await eventos.create(aforo_total=10)
        ok, reasons = await outcomes(eventos, [eventos.reservar(created.id, f"r{i}", 1 + i % 3) for i in range(40)])
        assert set(reasons) <= {"SOLD_OUT"}
        final = await eventos.check_invariant(created.id)
        assert final.entradas_disponibles >= 0
        assert sum(a.cantidad for a in await eventos.repository.allocations(created.id)) == 10 - final.entradas_disponibles

    async def test_twenty_callers_one_seat(self, eventos) -> None:
        created = await eventos.create(aforo_total=0, asientos=SEATS)
        ok, reasons = await outcomes(eventos, [eventos.reservar(created.id, f"r{i}", 1, ["A-3"]) for i in range(20)])
        assert len(ok) == 1
        assert reasons == ["SEAT_TAKEN"] * 19
        final = await eventos.check_invariant(created.id)
        assert "A-3" not in final.asientos_disponibles

    async def test_overlapping_seat_requests_all_or_nothing(self, eventos) -> None:
        created = await eventos.create(aforo_total=0, asientos=SEATS)
        pairs = [["A-1", "A-2"], ["A-2", "A-3"], ["A-3", "B-1"], ["B-1", "B-2"], ["B-2", "A-1"]] * 4
        ok, reasons = await outcomes(
            eventos, [eventos.reservar(created.id, f"r{i}", 2, pair) for i, pair in enumerate(pairs)]
        )
        assert 1 <= len(ok) <= 2
        assert set(reasons) == {"SEAT_TAKEN"}
        await eventos.check_invariant(created.id)

    async def test_reserve_release_storm(self, eventos) -> None:
        created = await eventos.create(aforo_total=5)
        calls = []
        for i in range(30):
            calls.append(eventos.reservar(created.id, f"r{i % 12}", 1 + i % 2))
            calls.append(eventos.liberar(created.id, f"r{(i * 7) % 12}"))
        _, reasons = await outcomes(eventos, calls)
        assert set(reasons) <= {"SOLD_OUT", "RESERVA_MISMATCH", "RESERVA_RELEASED"}
        await eventos.check_invariant(created.id)


class TestLimitPerBuyer:
    """max_por_usuario: the tickets one buyer holds of an event, across its reservations, checked in the take."""

    async def test_across_reservations_and_given_back(self, eventos) -> None:
        created = await eventos.create(aforo_total=10, max_por_usuario=3)
        await eventos.reservar(created.id, "r1", 2, usuario="ana")
        error = await eventos.fails(eventos.reservar(created.id, "r2", 2, usuario="ana"), PRECONDITION, LIMIT)
        metadata = eventos.error_metadata(error)
        named = ("max_por_usuario", "compradas", "solicitadas", "disponibles", "usuario_id")
        assert [metadata[k] for k in named] == ["3", "2", "2", "8", "ana"]
        assert "at most 3 tickets" in error.details() and "already has 2" in error.details()
        await eventos.reservar(created.id, "r2", 1, usuario="ana")  # r2 took nothing: it may take, within the limit
        await eventos.reservar(created.id, "r3", 3, usuario="bea")  # another buyer has an allowance of its own
        await eventos.fails(eventos.reservar(created.id, "r4", 1, usuario="ana"), PRECONDITION, LIMIT)
        assert await eventos.bought(created.id) == {"ana": 3, "bea": 3}
        await eventos.liberar(created.id, "r1")  # a cancellation gives ana's 2 back
        await eventos.reservar(created.id, "r5", 2, usuario="ana")
        await eventos.fails(eventos.reservar(created.id, "r6", 1, usuario="ana"), PRECONDITION, LIMIT)
        final = await eventos.check_invariant(created.id)
        assert final.entradas_disponibles == 4

    async def test_a_retry_at_the_limit_answers_what_it_holds(self, eventos) -> None:
        created = await eventos.create(aforo_total=10, max_por_usuario=2)
        first = await eventos.reservar(created.id, "r1", 2, usuario="ana")
        again = await eventos.reservar(created.id, "r1", 2, usuario="ana")
        assert (again.cantidad, again.inventario_version) == (2, first.inventario_version)
        await eventos.fails(eventos.reservar(created.id, "r1", 2, usuario="bea"), PRECONDITION, "RESERVA_MISMATCH")
        await eventos.check_invariant(created.id)

    async def test_a_limited_event_needs_the_buyer(self, eventos) -> None:
        created = await eventos.create(aforo_total=10, max_por_usuario=2)
        error = await eventos.fails(eventos.reservar(created.id, "r1", 1), INVALID, "VALIDATION_FAILED")
        assert eventos.error_metadata(error)["field"] == "usuario_id"
        await eventos.fails(eventos.reservar(created.id, "r2", 1, usuario="u" * 129), INVALID, "VALIDATION_FAILED")
        assert (await eventos.check_invariant(created.id)).entradas_disponibles == 10

    async def test_sold_out_is_said_before_the_limit(self, eventos) -> None:
        created = await eventos.create(aforo_total=3, max_por_usuario=2)
        await eventos.reservar(created.id, "r1", 2, usuario="ana")
        await eventos.fails(eventos.reservar(created.id, "r2", 2, usuario="ana"), PRECONDITION, "SOLD_OUT")
        await eventos.fails(eventos.reservar(created.id, "r3", 1, usuario="ana"), PRECONDITION, LIMIT)

    async def test_seated(self, eventos) -> None:
        created = await eventos.create(aforo_total=0, asientos=SEATS, max_por_usuario=2)
        await eventos.reservar(created.id, "r1", 1, ["A-1"], usuario="ana")
        await eventos.fails(
            eventos.reservar(created.id, "r2", 2, ["A-2", "A-3"], usuario="ana"), PRECONDITION, LIMIT
        )
        final = await eventos.check_invariant(created.id)
        assert list(final.asientos_disponibles) == ["A-2", "A-3", "B-1", "B-2"]  # the refused take held no seat

    async def test_concurrent_takes_of_one_buyer_never_exceed_it(self, eventos) -> None:
        created = await eventos.create(aforo_total=50, max_por_usuario=3)
        takes = [eventos.reservar(created.id, f"r{i}", 1, usuario="bot") for i in range(30)]
        ok, reasons = await outcomes(eventos, takes)
        assert len(ok) == 3
        assert reasons == [LIMIT] * 27
        final = await eventos.check_invariant(created.id)
        assert final.entradas_disponibles == 47
        assert await eventos.bought(created.id) == {"bot": 3}

    async def test_concurrent_buyers_each_get_their_allowance(self, eventos) -> None:
        created = await eventos.create(aforo_total=12, max_por_usuario=2)
        calls = [eventos.reservar(created.id, f"r{i}", 1 + i % 2, usuario=f"u{i % 5}") for i in range(40)]
        _, reasons = await outcomes(eventos, calls)
        assert set(reasons) <= {LIMIT, "SOLD_OUT"}
        await eventos.check_invariant(created.id)
        assert all(n <= 2 for n in (await eventos.bought(created.id)).values())

    async def test_takes_and_give_backs_of_one_buyer_racing(self, eventos) -> None:
        created = await eventos.create(aforo_total=20, max_por_usuario=3)
        calls = []
        for i in range(30):
            calls.append(eventos.reservar(created.id, f"r{i % 10}", 1 + i % 2, usuario="ana"))
            calls.append(eventos.liberar(created.id, f"r{(i * 3) % 10}"))
        _, reasons = await outcomes(eventos, calls)
        assert set(reasons) <= {LIMIT, "RESERVA_MISMATCH", "RESERVA_RELEASED"}
        await eventos.check_invariant(created.id)
        assert (await eventos.bought(created.id)).get("ana", 0) <= 3

    async def test_no_limit_still_counts_so_a_later_limit_sees_what_each_buyer_holds(self, eventos) -> None:
        created = await eventos.create(aforo_total=20)
        await eventos.reservar(created.id, "r1", 4, usuario="ana")
        await eventos.reservar(created.id, "r2", 1)  # a take that names no buyer counts against no one
        await set_limit(eventos, created.id, 3)
        error = await eventos.fails(eventos.reservar(created.id, "r3", 1, usuario="ana"), PRECONDITION, LIMIT)
        assert eventos.error_metadata(error)["compradas"] == "4"  # kept (nothing is taken back), but no more
        await eventos.reservar(created.id, "r4", 3, usuario="bea")
        await set_limit(eventos, created.id, 6)
        await eventos.reservar(created.id, "r3", 2, usuario="ana")
        await eventos.fails(eventos.reservar(created.id, "r5", 1, usuario="ana"), PRECONDITION, LIMIT)
        await set_limit(eventos, created.id, 0)
        await eventos.reservar(created.id, "r5", 1, usuario="ana")
        await eventos.check_invariant(created.id)
        assert await eventos.bought(created.id) == {"ana": 7, "bea": 3}

    async def test_a_limit_set_while_takes_race(self, eventos) -> None:
        created = await eventos.create(aforo_total=40)
        takes = [eventos.reservar(created.id, f"r{i}", 1, usuario="ana") for i in range(20)]
        updated, *results = await asyncio.gather(set_limit(eventos, created.id, 2), *takes, return_exceptions=True)
        assert not isinstance(updated, BaseException), updated
        assert {eventos.reason(r) for r in results if isinstance(r, grpc.aio.AioRpcError)} <= {LIMIT}
        await eventos.check_invariant(created.id)
        # Takes committed before the limit keep their tickets; none after it took ana past 2.
        assert (await eventos.bought(created.id))["ana"] >= 2
        await eventos.fails(eventos.reservar(created.id, "late", 1, usuario="ana"), PRECONDITION, LIMIT)
