"""The purchase saga over real channels: usuarios, eventos and reservas servers, MongoDB, Redis.

Every test ends with the DESIGN.md invariants checked on the stored data (the `world` fixture).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, timedelta

import grpc
from conftest import CANCELADA, CONFIRMADA, FALLIDA, PENDIENTE, PRECIO, World
from google.protobuf import timestamp_pb2

from eventflow.eventos.v1 import eventos_pb2
from eventflow.reservas.v1 import reservas_pb2
from infra.server import GrpcApp
from reservas.server import create_app as create_reservas

HAPPY = [
    "ReservaSolicitada",
    "PasoIniciado", "DatosValidados",
    "PasoIniciado", "EntradasBloqueadas",
    "PasoIniciado", "PagoProcesado",
    "PasoIniciado", "CompraRegistrada", "ReservaConfirmada",
]  # fmt: skip


async def test_happy_path_confirms_charges_takes_the_tickets_and_records_the_purchase(stack: World) -> None:
    usuario, evento = await stack.usuario(), await stack.evento(aforo=10)
    reserva = await stack.reservar(stack.request(usuario, evento.id, cantidad=3))
    assert reserva.estado == CONFIRMADA
    assert (reserva.monto, reserva.moneda, reserva.cantidad) == (3 * PRECIO, "UYU", 3)
    assert [p.tipo for p in reserva.pagos] == [reservas_pb2.TIPO_PAGO_CARGO]
    assert await stack.tipos(reserva.id) == HAPPY
    assert (await stack.get(reserva.id)) == reserva
    assert (await stack.get_evento(evento.id)).entradas_disponibles == 7
    assert await stack.historial_compras(usuario) == [reserva.id]
    assert await stack.ledger(reserva.id) == ["CARGO"]


async def test_seated_purchase_takes_exactly_its_seats(stack: World) -> None:
    usuario, evento = await stack.usuario(), await stack.evento(asientos=["A-1", "A-2", "A-3"])
    reserva = await stack.reservar(stack.request(usuario, evento.id, cantidad=2, asientos=["A-3", "A-1"]))
    assert reserva.estado == CONFIRMADA and list(reserva.asientos) == ["A-3", "A-1"]
    assert list((await stack.get_evento(evento.id)).asientos_disponibles) == ["A-2"]


async def test_sold_out_is_answered_by_the_gate_with_nothing_recorded(stack: World) -> None:
    usuario, evento = await stack.usuario(), await stack.evento(aforo=2)
    failure = await stack.fails(stack.reservar(stack.request(usuario, evento.id, cantidad=3)))
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SOLD_OUT")
    assert failure.metadata["disponibles"] == "2" and "reserva_id" not in failure.metadata
    assert await stack.db("reservas")["reserva_eventos"].count_documents({}) == 0
    assert await stack.db("reservas")["saga_leases"].count_documents({}) == 0
    assert (await stack.get_evento(evento.id)).entradas_disponibles == 2


async def test_sold_out_in_eventos_fails_with_the_reservation_id_and_undoes_everything(
    world: World, start_app: Callable[[Awaitable[GrpcApp]], Awaitable[str]]
) -> None:
    # A gate that refreshes rarely, so it still believes what the first purchase reported.
    world.reservas = world.connect(await start_app(create_reservas(world.reservas_config(gate_refresh_seconds=600))))
    usuario, evento = await world.usuario(), await world.evento(aforo=2)
    assert (await world.reservar(world.request(usuario, evento.id))).estado == CONFIRMADA  # the gate: 1 left
    # The last ticket is taken outside the saga: the gate does not know it until it refreshes.
    outside = eventos_pb2.ReservarEntradasRequest(evento_id=evento.id, reserva_id="outside", cantidad=1)
    await world.eventos.ReservarEntradas(outside, timeout=10)

    failure = await world.fails(world.reservar(world.request(usuario, evento.id)))
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SOLD_OUT")
    reserva = await world.get(failure.metadata["reserva_id"])
    assert reserva.estado == FALLIDA and reserva.motivo
    tipos = await world.tipos(reserva.id)
    assert tipos[-3:] == ["CompensacionIniciada", "EntradasLiberadas", "ReservaFallida"]
    assert (await world.get_evento(evento.id)).entradas_disponibles == 0
    # eventos told the gate what is left: the next buyer is answered there, with nothing recorded.
    again = await world.fails(world.reservar(world.request(usuario, evento.id)))
    assert again.reason == "SOLD_OUT" and "reserva_id" not in again.metadata
    liberar = eventos_pb2.LiberarEntradasRequest(evento_id=evento.id, reserva_id="outside")
    await world.eventos.LiberarEntradas(liberar, timeout=10)  # the invariants count only reservations' tickets


async def test_a_seat_sold_to_someone_else_is_seat_taken(stack: World) -> None:
    evento = await stack.evento(asientos=["A-1", "A-2", "A-3"])
    first, second = await stack.usuarios_n(2)
    await stack.reservar(stack.request(first, evento.id, asientos=["A-1"]))
    failure = await stack.fails(stack.reservar(stack.request(second, evento.id, cantidad=2, asientos=["A-2", "A-1"])))
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SEAT_TAKEN")
    assert list((await stack.get_evento(evento.id)).asientos_disponibles) == ["A-2", "A-3"]  # A-2 given back


async def test_seat_labels_are_kept_without_surrounding_spaces(stack: World) -> None:
    """" A-1" is seat A-1, for reservas (its record, its hold) as for eventos: a second buyer of "A-1" finds it
    taken, and the same purchase asked again with the spaces gone is the same purchase."""
    evento = await stack.evento(asientos=["A-1", "A-2", "A-3"])
    first, second = await stack.usuarios_n(2)
    request = stack.request(first, evento.id, cantidad=2, asientos=[" A-1", "A-2 "])
    reserva = await stack.reservar(request)
    assert reserva.estado == CONFIRMADA and list(reserva.asientos) == ["A-1", "A-2"]
    del request.asientos[:]
    request.asientos.extend(["A-1", "A-2"])
    assert (await stack.reservar(request)).id == reserva.id  # the same purchase, not IDEMPOTENCY_KEY_REUSED
    failure = await stack.fails(stack.reservar(stack.request(second, evento.id, asientos=["A-1"])))
    assert failure.reason == "SEAT_TAKEN"


async def test_a_declined_card_fails_and_charges_nothing(stack: World) -> None:
    usuario, evento = await stack.usuario(), await stack.evento()
    failure = await stack.fails(stack.reservar(stack.request(usuario, evento.id, medio_pago="tok_declined")))
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PAYMENT_DECLINED")
    reserva = await stack.get(failure.metadata["reserva_id"])
    assert reserva.estado == FALLIDA and list(reserva.pagos) == []
    assert "PagoRechazado" in await stack.tipos(reserva.id)
    assert await stack.ledger(reserva.id) == []
    assert (await stack.get_evento(evento.id)).entradas_disponibles == 10


async def test_a_gateway_timeout_is_settled_from_the_ledger_refunded_and_fails(stack: World) -> None:
    usuario, evento = await stack.usuario(), await stack.evento()
    failure = await stack.fails(stack.reservar(stack.request(usuario, evento.id, medio_pago="tok_timeout")))
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PAYMENT_TIMEOUT")
    reserva = await stack.get(failure.metadata["reserva_id"])
    assert reserva.estado == FALLIDA
    assert [p.tipo for p in reserva.pagos] == [reservas_pb2.TIPO_PAGO_CARGO, reservas_pb2.TIPO_PAGO_REEMBOLSO]
    assert await stack.ledger(reserva.id) == ["CARGO", "REEMBOLSO"]
    assert await stack.historial_compras(usuario) == []


async def test_a_slow_card_is_approved(stack: World) -> None:
    usuario, evento = await stack.usuario(), await stack.evento()
    reserva = await stack.reservar(stack.request(usuario, evento.id, medio_pago="tok_slow"))
    assert reserva.estado == CONFIRMADA


async def test_unknown_user_or_event_is_not_found_and_records_nothing(stack: World) -> None:
    usuario, evento = await stack.usuario(), await stack.evento()
    nobody = await stack.fails(stack.reservar(stack.request("000000000000000000000000", evento.id)))
    assert (nobody.code, nobody.reason) == (grpc.StatusCode.NOT_FOUND, "USUARIO_NOT_FOUND")
    nothing = await stack.fails(stack.reservar(stack.request(usuario, "000000000000000000000000")))
    assert (nothing.code, nothing.reason) == (grpc.StatusCode.NOT_FOUND, "EVENTO_NOT_FOUND")
    for failure in (nobody, nothing):
        assert "reserva_id" not in failure.metadata
    assert await stack.db("reservas")["reserva_eventos"].count_documents({}) == 0


async def test_an_event_that_already_happened_is_event_past(stack: World) -> None:
    usuario = await stack.usuario()
    evento = await stack.evento()
    await stack.pass_time(evento.id, timedelta(days=1))
    failure = await stack.fails(stack.reservar(stack.request(usuario, evento.id)))
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "EVENT_PAST")
    assert "reserva_id" not in failure.metadata  # refused before anything was recorded
    assert await stack.db("reservas")["reserva_eventos"].count_documents({}) == 0


async def test_bad_input_is_invalid_argument_naming_the_field_and_records_nothing(stack: World) -> None:
    usuario, evento = await stack.usuario(), await stack.evento()
    cases = {
        "cantidad": stack.request(usuario, evento.id, cantidad=0),
        "asientos": stack.request(usuario, evento.id, cantidad=2, asientos=["A-1", "A-1"]),
        "medio_pago": stack.request(usuario, evento.id, medio_pago="tok_amex"),
        "idempotency_key": reservas_pb2.ReservarRequest(
            usuario_id=usuario, evento_id=evento.id, cantidad=1, medio_pago="tok_visa"
        ),
        "usuario_id": stack.request("", evento.id),
        "evento_id": stack.request(usuario, ""),
    }
    for field, request in cases.items():
        failure = await stack.fails(stack.reservar(request))
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, (field, failure)
        assert failure.metadata.get("field") == field, (field, failure)
    assert await stack.db("reservas")["reserva_eventos"].count_documents({}) == 0


async def test_seats_must_match_the_kind_of_event(stack: World) -> None:
    usuario = await stack.usuario()
    seated, unseated = await stack.evento(asientos=["A-1"]), await stack.evento()
    without = await stack.fails(stack.reservar(stack.request(usuario, seated.id)))
    assert (without.code, without.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "SEATS_REQUIRED")
    with_seats = await stack.fails(stack.reservar(stack.request(usuario, unseated.id, asientos=["A-1"])))
    assert (with_seats.code, with_seats.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "SEATS_NOT_ALLOWED")
    unknown = await stack.fails(stack.reservar(stack.request(usuario, seated.id, asientos=["Z-9"])))
    assert (unknown.code, unknown.reason, unknown.metadata["field"]) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNKNOWN_SEAT",
        "asientos",
    )


async def test_a_repeated_key_answers_the_first_purchase_and_buys_nothing_more(stack: World) -> None:
    usuario, evento = await stack.usuario(), await stack.evento()
    request = stack.request(usuario, evento.id, cantidad=2, key="compra-1")
    first = await stack.reservar(request)
    again = await stack.reservar(request)
    assert again == first
    assert await stack.ledger(first.id) == ["CARGO"]
    assert (await stack.get_evento(evento.id)).entradas_disponibles == 8

    declined = stack.request(usuario, evento.id, medio_pago="tok_declined", key="compra-2")
    one = await stack.fails(stack.reservar(declined))
    two = await stack.fails(stack.reservar(declined))
    assert (two.code, two.reason, two.metadata["reserva_id"]) == (one.code, one.reason, one.metadata["reserva_id"])
    assert two.reason == "PAYMENT_DECLINED"


async def test_concurrent_repeats_run_one_saga(stack: World) -> None:
    usuario, evento = await stack.usuario(), await stack.evento()
    request = stack.request(usuario, evento.id, medio_pago="tok_slow", key="una-sola-vez")
    answers = await asyncio.gather(*(stack.reservar(request) for _ in range(10)))
    assert len({a.id for a in answers}) == 1 and all(a.estado == CONFIRMADA for a in answers)
    assert (await stack.tipos(answers[0].id)).count("ReservaSolicitada") == 1
    assert await stack.ledger(answers[0].id) == ["CARGO"]
    assert await stack.db("reservas")["reserva_eventos"].distinct("reserva_id") == [answers[0].id]
    assert (await stack.get_evento(evento.id)).entradas_disponibles == 9


async def test_the_same_key_for_another_purchase_is_refused(stack: World) -> None:
    usuario, evento = await stack.usuario(), await stack.evento()
    first = await stack.reservar(stack.request(usuario, evento.id, key="k"))
    failure = await stack.fails(stack.reservar(stack.request(usuario, evento.id, cantidad=2, key="k")))
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED")
    assert failure.metadata["reserva_id"] == first.id
    other_user = await stack.usuario()  # keys are per user
    assert (await stack.reservar(stack.request(other_user, evento.id, key="k"))).id != first.id


async def test_cancel_refunds_gives_the_tickets_back_and_is_idempotent(stack: World) -> None:
    usuario, evento = await stack.usuario(), await stack.evento(aforo=5)
    reserva = await stack.reservar(stack.request(usuario, evento.id, cantidad=2))
    cancelada = await stack.cancelar(reserva.id)
    assert cancelada.estado == CANCELADA
    assert [p.tipo for p in cancelada.pagos] == [reservas_pb2.TIPO_PAGO_CARGO, reservas_pb2.TIPO_PAGO_REEMBOLSO]
    assert (await stack.tipos(reserva.id))[len(HAPPY) :] == [
        "CancelacionSolicitada", "PagoReembolsado", "EntradasLiberadas", "CompraAnulada", "ReservaCancelada",
    ]  # fmt: skip
    assert (await stack.get_evento(evento.id)).entradas_disponibles == 5
    assert await stack.historial_compras(usuario) == []
    again = await stack.cancelar(reserva.id)
    assert again == cancelada
    assert await stack.ledger(reserva.id) == ["CARGO", "REEMBOLSO"]


async def test_only_a_confirmed_reservation_of_a_future_event_can_be_cancelled(stack: World) -> None:
    usuario, evento = await stack.usuario(), await stack.evento()
    failed = await stack.fails(stack.reservar(stack.request(usuario, evento.id, medio_pago="tok_declined")))
    refused = await stack.fails(stack.cancelar(failed.metadata["reserva_id"]))
    assert (refused.code, refused.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_CANCELLABLE")
    unknown = await stack.fails(stack.cancelar("no-such-reservation"))
    assert (unknown.code, unknown.reason) == (grpc.StatusCode.NOT_FOUND, "RESERVA_NOT_FOUND")
    empty = await stack.fails(stack.cancelar(""))
    assert (empty.code, empty.metadata["field"]) == (grpc.StatusCode.INVALID_ARGUMENT, "id")

    reserva = await stack.reservar(stack.request(usuario, evento.id))
    await stack.pass_time(evento.id, timedelta(hours=1))
    too_late = await stack.fails(stack.cancelar(reserva.id))
    assert (too_late.code, too_late.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "EVENT_PAST")
    assert (await stack.get(reserva.id)).estado == CONFIRMADA


async def test_a_dependency_down_is_unavailable_and_leaves_nothing_half_done(stack: World) -> None:
    usuario, evento = await stack.usuario(), await stack.evento()
    await stack.eventos_app.stop(grace=0)
    failure = await stack.fails(stack.reservar(stack.request(usuario, evento.id)))
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAVAILABLE, "DEPENDENCY_UNAVAILABLE")
    assert failure.metadata["service"] == "eventos"
    reserva = await stack.get(failure.metadata["reserva_id"])
    assert reserva.estado == FALLIDA and list(reserva.pagos) == []
    assert await stack.historial_compras(usuario) == []
    # and the invariants hold on what eventos stored (checked at teardown, reading its database)


async def test_get_reserva_as_of_replays_the_stream_up_to_that_instant(stack: World) -> None:
    usuario, evento = await stack.usuario(), await stack.evento()
    reserva = await stack.reservar(stack.request(usuario, evento.id))
    events = (
        await stack.stub.GetHistorialReserva(reservas_pb2.GetHistorialReservaRequest(reserva_id=reserva.id))
    ).eventos
    assert [e.version for e in events] == list(range(1, len(events) + 1))
    assert events[0].datos["usuario_id"] == usuario

    first = await stack.stub.GetReserva(reservas_pb2.GetReservaRequest(id=reserva.id, as_of=events[0].ocurrido))
    assert first.estado == PENDIENTE and first.version >= 1
    before = timestamp_pb2.Timestamp()
    before.FromDatetime(events[0].ocurrido.ToDatetime(tzinfo=UTC) - timedelta(seconds=1))
    missing = await stack.fails(stack.stub.GetReserva(reservas_pb2.GetReservaRequest(id=reserva.id, as_of=before)))
    assert (missing.code, missing.reason) == (grpc.StatusCode.NOT_FOUND, "RESERVA_NOT_FOUND")
    bad = timestamp_pb2.Timestamp(seconds=10**12)
    invalid = await stack.fails(stack.stub.GetReserva(reservas_pb2.GetReservaRequest(id=reserva.id, as_of=bad)))
    assert (invalid.code, invalid.metadata["field"]) == (grpc.StatusCode.INVALID_ARGUMENT, "as_of")
    empty = await stack.fails(stack.stub.GetHistorialReserva(reservas_pb2.GetHistorialReservaRequest()))
    assert (empty.code, empty.metadata["field"]) == (grpc.StatusCode.INVALID_ARGUMENT, "reserva_id")
