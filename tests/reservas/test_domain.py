"""The reservation aggregate: state is rebuilt from events, and only legal transitions are recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reservas.domain import Estado, InvalidTransition, Reserva, Tipo
from reservas.saga.chain import build_saga

T0 = datetime(2027, 1, 1, 12, tzinfo=UTC)
#: Which step an event completes or undoes is the saga's to say (its steps name their events).
SAGA = build_saga()


def solicitada(reserva: Reserva) -> None:
    reserva.record(
        Tipo.RESERVA_SOLICITADA,
        {
            "usuario_id": "u1",
            "evento_id": "e1",
            "cantidad": 2,
            "asientos": ["A-1", "A-2"],
            "medio_pago": "tok_visa",
            "idempotency_key": "k1",
        },
        T0,
    )


def confirmada() -> Reserva:
    r = Reserva(id="r1")
    solicitada(r)
    r.record(Tipo.DATOS_VALIDADOS, {"monto": 2000, "moneda": "UYU"}, T0)
    for paso, hecho, datos in [
        ("ValidadorInventario", Tipo.ENTRADAS_BLOQUEADAS, {"holds": []}),
        ("ProcesadorPago", Tipo.PAGO_PROCESADO, {"pago_id": "p1", "monto": 2000, "moneda": "UYU"}),
        ("ConfirmadorReserva", Tipo.COMPRA_REGISTRADA, {}),
    ]:
        r.record(Tipo.PASO_INICIADO, {"paso": paso}, T0)
        r.record(hecho, datos, T0)
    r.record(Tipo.RESERVA_CONFIRMADA, {}, T0 + timedelta(seconds=1))
    return r


def test_replay_gives_the_state_the_events_describe() -> None:
    r = confirmada()
    again = Reserva.replay(r.pending)
    assert again is not None
    assert (again.estado, again.version, again.monto, again.charged) == (Estado.CONFIRMADA, 9, 2000, 2000)
    assert again.asientos == ("A-1", "A-2")
    assert [step.name for step in SAGA.chain if step.completed(again)] == [
        "ValidadorDatos", "ValidadorInventario", "ProcesadorPago", "ConfirmadorReserva",
    ]  # fmt: skip
    assert again.settled


def test_replay_of_nothing_is_none() -> None:
    assert Reserva.replay([]) is None


def test_a_stream_starts_with_the_request() -> None:
    with pytest.raises(InvalidTransition):
        Reserva(id="r").record(Tipo.RESERVA_CONFIRMADA, {}, T0)


def test_compensation_undoes_started_steps_newest_first() -> None:
    r = Reserva(id="r1")
    solicitada(r)
    r.record(Tipo.DATOS_VALIDADOS, {"monto": 2000, "moneda": "UYU"}, T0)
    r.record(Tipo.PASO_INICIADO, {"paso": "ValidadorInventario"}, T0)
    r.record(Tipo.ENTRADAS_BLOQUEADAS, {}, T0)
    r.record(Tipo.PASO_INICIADO, {"paso": "ProcesadorPago"}, T0)  # started, outcome unknown
    assert SAGA.to_undo(r) == ["ProcesadorPago", "ValidadorInventario"]
    r.record(Tipo.COMPENSACION_INICIADA, {"motivo": "pago rechazado", "razon": "PAYMENT_DECLINED"}, T0)
    r.record(Tipo.ENTRADAS_LIBERADAS, {}, T0)
    assert SAGA.to_undo(r) == ["ProcesadorPago"]
    with pytest.raises(InvalidTransition):
        r.record(Tipo.RESERVA_CONFIRMADA, {}, T0)  # a compensating saga never confirms
    r.record(Tipo.RESERVA_FALLIDA, {"motivo": "pago rechazado", "razon": "PAYMENT_DECLINED"}, T0)
    assert (r.estado, r.razon) == (Estado.FALLIDA, "PAYMENT_DECLINED")
    with pytest.raises(InvalidTransition):
        r.record(Tipo.PASO_INICIADO, {"paso": "ProcesadorPago"}, T0)


def test_failing_requires_compensation_first() -> None:
    r = Reserva(id="r1")
    solicitada(r)
    with pytest.raises(InvalidTransition):
        r.record(Tipo.RESERVA_FALLIDA, {"motivo": "x"}, T0)


def test_only_a_confirmed_reservation_is_cancelled_and_only_once() -> None:
    pendiente = Reserva(id="r2")
    solicitada(pendiente)
    with pytest.raises(InvalidTransition):
        pendiente.record(Tipo.CANCELACION_SOLICITADA, {}, T0)

    r = confirmada()
    with pytest.raises(InvalidTransition):
        r.record(Tipo.PAGO_REEMBOLSADO, {"pago_id": "x", "monto": 2000}, T0)  # not without a cancellation
    r.record(Tipo.CANCELACION_SOLICITADA, {"motivo": "no puedo ir"}, T0)
    with pytest.raises(InvalidTransition):
        r.record(Tipo.CANCELACION_SOLICITADA, {}, T0)
    assert not r.settled
    r.record(Tipo.PAGO_REEMBOLSADO, {"pago_id": "p2", "monto": 2000, "moneda": "UYU"}, T0)
    r.record(Tipo.ENTRADAS_LIBERADAS, {}, T0)
    r.record(Tipo.COMPRA_ANULADA, {}, T0)
    r.record(Tipo.RESERVA_CANCELADA, {"motivo": "no puedo ir"}, T0)
    assert (r.estado, r.charged, r.settled) == (Estado.CANCELADA, 0, True)


def test_as_of_is_a_prefix_of_the_stream() -> None:
    r = confirmada()
    earlier = Reserva.replay([e for e in r.pending if e.ocurrido <= T0])
    assert earlier is not None and earlier.estado is Estado.PENDIENTE and earlier.version == 8
