"""Unit tests of the eventos domain rules (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from eventos import domain
from eventos.domain import Allocation, Evento, EventoDraft, ReservaRequest, Stock
from infra.errors import FailedPrecondition, InvalidArgument, NotFound

FECHA = datetime(2027, 3, 14, 21, 0, tzinfo=UTC)
#: The domain's clock in these tests: FECHA is a day ahead of it.
NOW = FECHA - timedelta(days=1)


def draft(**changes: object) -> EventoDraft:
    values: dict[str, object] = {"nombre": "Concierto", "fecha": FECHA, "lugar": "Antel Arena", "aforo_total": 10}
    values.update(changes)
    return EventoDraft(**values)  # type: ignore[arg-type]


def evento(**changes: object) -> Evento:
    values: dict[str, object] = {
        "id": "e1", "nombre": "Concierto", "fecha": FECHA, "lugar": "Antel Arena",
        "aforo_total": 10, "entradas_disponibles": 10, "precio": 100, "moneda": "UYU",
    }  # fmt: skip
    values.update(changes)
    return Evento(**values)  # type: ignore[arg-type]


def seated(available: tuple[str, ...] = ("A-1", "A-2", "A-3")) -> Evento:
    return evento(
        aforo_total=3, entradas_disponibles=len(available), asientos=("A-1", "A-2", "A-3"), asientos_disponibles=available
    )


def stock(disponibles: int = 10, version: int = 7) -> Stock:
    """What a take of an unseated event is judged against."""
    return Stock("e1", disponibles, version, False, {})


def seated_stock(available: tuple[str, ...] = ("A-1", "A-2", "A-3")) -> Stock:
    """A take of seats of a seated event with seats A-1..A-3, those not `available` held by "other"."""
    holders = {label: None if label in available else "other" for label in ("A-1", "A-2", "A-3")}
    return Stock("e1", len(available), 7, True, holders)


def new_evento(d: EventoDraft) -> domain.NewEvento:
    return domain.validate_new_evento(d, now=NOW)


def plan_update(current: Evento, d: EventoDraft, fields: list[str]) -> dict[str, object]:
    return domain.plan_update(current, d, fields, now=NOW)


def field_of(error: pytest.ExceptionInfo[InvalidArgument]) -> str:
    return error.value.metadata["field"]


class TestNewEvento:
    def test_valid_unseated_defaults(self) -> None:
        new = new_evento(draft(nombre="  Concierto  ", moneda=""))
        assert new.nombre == "Concierto"
        assert new.moneda == "UYU"
        assert new.aforo_total == 10
        assert new.asientos == ()

    @pytest.mark.parametrize(
        ("changes", "field"),
        [
            ({"nombre": ""}, "nombre"),
            ({"nombre": "   "}, "nombre"),
            ({"nombre": "x" * 201}, "nombre"),
            ({"lugar": ""}, "lugar"),
            ({"lugar": "y" * 201}, "lugar"),
            ({"fecha": None}, "fecha"),
            ({"aforo_total": 0}, "aforo_total"),
            ({"aforo_total": -3}, "aforo_total"),
            ({"precio": -1}, "precio"),
            ({"moneda": "usd"}, "moneda"),
            ({"moneda": "US"}, "moneda"),
            ({"moneda": "USDX"}, "moneda"),
            ({"moneda": "U5D"}, "moneda"),
        ],
    )
    def test_each_rule(self, changes: dict[str, object], field: str) -> None:
        with pytest.raises(InvalidArgument) as caught:
            new_evento(draft(**changes))
        assert field_of(caught) == field
        assert caught.value.reason == "VALIDATION_FAILED"
        assert field in caught.value.message

    def test_limits_are_inclusive(self) -> None:
        new = new_evento(draft(nombre="x" * 200, lugar="y" * 200, precio=0, moneda="USD"))
        assert len(new.nombre) == 200 and new.precio == 0 and new.moneda == "USD"

    def test_fecha_is_kept_in_utc_to_the_millisecond(self) -> None:
        local = datetime(2027, 3, 14, 18, 0, 0, 123456, tzinfo=timezone(timedelta(hours=-3)))
        new = new_evento(draft(fecha=local))
        assert new.fecha == datetime(2027, 3, 14, 21, 0, 0, 123000, tzinfo=UTC)

    def test_a_fecha_before_now_is_fecha_in_past_and_now_itself_is_not(self) -> None:
        for fecha in (NOW - timedelta(milliseconds=1), datetime(1970, 1, 1, tzinfo=UTC)):
            with pytest.raises(InvalidArgument) as caught:
                new_evento(draft(fecha=fecha))
            assert (caught.value.reason, field_of(caught)) == ("FECHA_IN_PAST", "fecha")
            assert "in the past" in caught.value.message
        assert new_evento(draft(fecha=NOW)).fecha == NOW
        with pytest.raises(InvalidArgument) as moved:
            plan_update(evento(), draft(fecha=NOW - timedelta(hours=1)), ["fecha"])
        assert moved.value.reason == "FECHA_IN_PAST"
        assert plan_update(evento(), draft(fecha=NOW + timedelta(days=7)), ["fecha"]) == {"fecha": NOW + timedelta(days=7)}

    def test_seat_map_derives_capacity(self) -> None:
        new = new_evento(draft(aforo_total=0, asientos=("A-1", "A-2")))
        assert new.aforo_total == 2 and new.asientos == ("A-1", "A-2")
        assert new_evento(draft(aforo_total=2, asientos=("A-1", "A-2"))).aforo_total == 2

    def test_max_por_usuario(self) -> None:
        assert new_evento(draft()).max_por_usuario == 0
        assert new_evento(draft(max_por_usuario=10)).max_por_usuario == 10
        with_seats = draft(aforo_total=0, asientos=("A-1", "A-2"), max_por_usuario=2)
        assert new_evento(with_seats).max_por_usuario == 2
        for changes in (
            {"max_por_usuario": -1},
            {"max_por_usuario": 11},
            {"aforo_total": 0, "asientos": ("A-1",), "max_por_usuario": 2},  # above the number of seats
        ):
            with pytest.raises(InvalidArgument) as caught:
                new_evento(draft(**changes))
            assert field_of(caught) == "max_por_usuario"

    @pytest.mark.parametrize(
        ("changes", "field"),
        [
            ({"aforo_total": 3, "asientos": ("A-1", "A-2")}, "aforo_total"),
            ({"asientos": ("A-1", "A-1")}, "asientos"),
            ({"asientos": ("A-1", " ")}, "asientos"),
            ({"asientos": ("A-1", "x" * 21)}, "asientos"),
        ],
    )
    def test_seat_map_rules(self, changes: dict[str, object], field: str) -> None:
        with pytest.raises(InvalidArgument) as caught:
            new_evento(draft(**changes))
        assert field_of(caught) == field


class TestUpdate:
    def test_empty_mask_means_every_updatable_field(self) -> None:
        assert domain.validate_update_mask([]) == domain.UPDATABLE_FIELDS

    @pytest.mark.parametrize("path", ["entradas_disponibles", "asientos", "asientos_disponibles", "id", "color", ""])
    def test_bad_mask_paths(self, path: str) -> None:
        with pytest.raises(InvalidArgument) as caught:
            domain.validate_update_mask(["nombre", path])
        assert caught.value.reason == "INVALID_UPDATE_MASK"

    def test_capacity_never_below_taken(self) -> None:
        current = evento(aforo_total=10, entradas_disponibles=4)  # 6 taken
        assert plan_update(current, draft(aforo_total=6), ["aforo_total"]) == {"aforo_total": 6}
        with pytest.raises(FailedPrecondition) as caught:
            plan_update(current, draft(aforo_total=5), ["aforo_total"])
        assert caught.value.reason == "CAPACITY_BELOW_SOLD"

    def test_unchanged_capacity_is_not_a_change(self) -> None:
        assert plan_update(evento(), draft(aforo_total=10), ["aforo_total"]) == {}

    def test_seated_capacity_cannot_change(self) -> None:
        assert plan_update(seated(), draft(aforo_total=3), ["aforo_total"]) == {}
        assert plan_update(seated(), draft(aforo_total=0), ["aforo_total"]) == {}
        with pytest.raises(FailedPrecondition) as caught:
            plan_update(seated(), draft(aforo_total=4), ["aforo_total"])
        assert caught.value.reason == "SEATED_EVENT"

    def test_new_read_only_fields_cannot_be_updated(self) -> None:
        for path in ("inventario_version", "con_asientos"):
            with pytest.raises(InvalidArgument) as caught:
                domain.validate_update_mask([path])
            assert caught.value.reason == "INVALID_UPDATE_MASK"

    def test_fields_are_validated(self) -> None:
        with pytest.raises(InvalidArgument):
            plan_update(evento(), draft(nombre=""), ["nombre"])
        assert plan_update(evento(), draft(moneda=""), ["moneda"]) == {"moneda": "UYU"}

    def test_max_por_usuario_within_the_resulting_capacity(self) -> None:
        assert plan_update(evento(), draft(max_por_usuario=4), ["max_por_usuario"]) == {"max_por_usuario": 4}
        assert plan_update(evento(max_por_usuario=4), draft(), ["max_por_usuario"]) == {"max_por_usuario": 0}
        both = ["aforo_total", "max_por_usuario"]
        assert plan_update(evento(), draft(aforo_total=20, max_por_usuario=15), both) == dict(zip(both, (20, 15)))
        for changes, fields, field in (
            ({"max_por_usuario": -1}, ["max_por_usuario"], "max_por_usuario"),
            ({"max_por_usuario": 11}, ["max_por_usuario"], "max_por_usuario"),
            ({"aforo_total": 5, "max_por_usuario": 6}, both, "max_por_usuario"),
        ):
            with pytest.raises(InvalidArgument) as caught:
                plan_update(evento(), draft(**changes), fields)
            assert field_of(caught) == field
        with pytest.raises(InvalidArgument) as caught:  # the capacity alone, below the limit the event has
            plan_update(evento(max_por_usuario=8), draft(aforo_total=6), ["aforo_total"])
        assert field_of(caught) == "aforo_total" and "max_por_usuario (8)" in caught.value.message


class TestReservaRequest:
    @pytest.mark.parametrize(
        ("request_", "field"),
        [
            (ReservaRequest("", "r1", 1), "evento_id"),
            (ReservaRequest("e1", "", 1), "reserva_id"),
            (ReservaRequest("e1", "r" * 129, 1), "reserva_id"),
            (ReservaRequest("e1", "r1", 0), "cantidad"),
            (ReservaRequest("e1", "r1", -2), "cantidad"),
            (ReservaRequest("e1", "r1", 2, ("A-1", "A-1")), "asientos"),
            (ReservaRequest("e1", "r1", 2, ("A-1",)), "asientos"),
            (ReservaRequest("e1", "r1", 1, (), "u" * 129), "usuario_id"),
        ],
    )
    def test_shape_rules(self, request_: ReservaRequest, field: str) -> None:
        with pytest.raises(InvalidArgument) as caught:
            domain.validate_reserva_request(request_)
        assert field_of(caught) == field

    def test_any_reserva_id_characters_are_fine(self) -> None:
        domain.validate_reserva_request(ReservaRequest("e1", "a.b$c d/é", 1))


class TestExplainRefusal:
    def test_missing_event(self) -> None:
        with pytest.raises(NotFound) as caught:
            domain.explain_refusal(None, ReservaRequest("e1", "r1", 1), None, False)
        assert caught.value.reason == "EVENTO_NOT_FOUND"

    def test_sold_out(self) -> None:
        with pytest.raises(FailedPrecondition) as caught:
            domain.explain_refusal(stock(disponibles=1), ReservaRequest("e1", "r1", 2), None, False)
        assert caught.value.reason == "SOLD_OUT"
        assert caught.value.metadata["disponibles"] == "1"
        assert caught.value.metadata["inventario_version"] == "7"

    def test_same_request_again_is_idempotent(self) -> None:
        held = Allocation("r1", 2, ("A-2", "A-1"))
        assert domain.explain_refusal(seated_stock(("A-3",)), ReservaRequest("e1", "r1", 2, ("A-1", "A-2")), held, False)

    def test_other_request_with_same_reserva_id(self) -> None:
        with pytest.raises(FailedPrecondition) as caught:
            domain.explain_refusal(stock(), ReservaRequest("e1", "r1", 3), Allocation("r1", 2), False)
        assert caught.value.reason == "RESERVA_MISMATCH"

    def test_released_reserva_id(self) -> None:
        with pytest.raises(FailedPrecondition) as caught:
            domain.explain_refusal(stock(), ReservaRequest("e1", "r1", 1), None, True)
        assert caught.value.reason == "RESERVA_RELEASED"

    def test_seat_taken_names_the_seats(self) -> None:
        with pytest.raises(FailedPrecondition) as caught:
            domain.explain_refusal(
                seated_stock(("A-1", "A-3")), ReservaRequest("e1", "r1", 2, ("A-1", "A-2")), None, False
            )
        assert caught.value.reason == "SEAT_TAKEN"
        assert caught.value.metadata["asientos"] == "A-2"
        assert (caught.value.metadata["disponibles"], caught.value.metadata["inventario_version"]) == ("2", "7")

    def test_unknown_seat(self) -> None:
        with pytest.raises(InvalidArgument) as caught:
            domain.explain_refusal(seated_stock(), ReservaRequest("e1", "r1", 1, ("Z-9",)), None, False)
        assert caught.value.reason == "UNKNOWN_SEAT"

    def test_seats_required_for_seated_and_refused_for_unseated(self) -> None:
        with pytest.raises(InvalidArgument):
            domain.explain_refusal(seated_stock(), ReservaRequest("e1", "r1", 1), None, False)
        with pytest.raises(InvalidArgument):
            domain.explain_refusal(stock(), ReservaRequest("e1", "r1", 1, ("A-1",)), None, False)

    def test_nothing_wrong_any_more_means_retry(self) -> None:
        assert domain.explain_refusal(stock(), ReservaRequest("e1", "r1", 1), None, False) is False

    def test_over_the_limit_per_buyer(self) -> None:
        limited = Stock("e1", 6, 7, False, {}, max_por_usuario=4, compradas=3)
        assert domain.explain_refusal(limited, ReservaRequest("e1", "r1", 1, (), "ana"), None, False) is False
        with pytest.raises(FailedPrecondition) as caught:
            domain.explain_refusal(limited, ReservaRequest("e1", "r1", 2, (), "ana"), None, False)
        assert caught.value.reason == "LIMIT_PER_BUYER_EXCEEDED"
        assert caught.value.metadata == {
            "evento_id": "e1", "usuario_id": "ana", "max_por_usuario": "4", "compradas": "3", "solicitadas": "2",
            "disponibles": "6", "inventario_version": "7",
        }  # fmt: skip
        with pytest.raises(InvalidArgument) as missing:  # a limited event counts every take against its buyer
            domain.explain_refusal(limited, ReservaRequest("e1", "r1", 1), None, False)
        assert field_of(missing) == "usuario_id"

    def test_a_retry_is_judged_by_what_it_holds_not_by_the_limit(self) -> None:
        at_limit = Stock("e1", 6, 7, False, {}, max_por_usuario=2, compradas=2)
        held = Allocation("r1", 2, (), "ana")
        assert domain.explain_refusal(at_limit, ReservaRequest("e1", "r1", 2, (), "ana"), held, False)
        assert domain.explain_refusal(at_limit, ReservaRequest("e1", "r1", 2), held, False)  # a caller naming no buyer
        assert Allocation("r1", 2).same_request(2, (), "ana")  # a take stored before buyers were named
        with pytest.raises(FailedPrecondition) as caught:
            domain.explain_refusal(at_limit, ReservaRequest("e1", "r1", 2, (), "bea"), held, False)
        assert caught.value.reason == "RESERVA_MISMATCH"


def test_seat_map_order() -> None:
    assert domain.in_seat_map_order(("A-1", "A-2", "B-1"), ["B-1", "A-1"]) == ("A-1", "B-1")


class TestReadMask:
    def test_empty_means_every_field(self) -> None:
        assert domain.validate_read_mask([]) == domain.READABLE_FIELDS

    def test_fields_in_proto_order(self) -> None:
        assert domain.validate_read_mask(["con_asientos", "precio", "fecha"]) == ("fecha", "precio", "con_asientos")

    @pytest.mark.parametrize("path", ["color", "", "reservas", "asientos.0"])
    def test_unknown_paths(self, path: str) -> None:
        with pytest.raises(InvalidArgument) as caught:
            domain.validate_read_mask(["fecha", path])
        assert caught.value.reason == "INVALID_READ_MASK"
        assert caught.value.metadata == {"field": "read_mask", "path": path}


def test_seated_is_known_without_the_seats() -> None:
    assert evento(con_asientos=True).seated
    assert seated().seated and not evento().seated


def test_a_price_whose_sums_could_overflow_is_refused() -> None:
    """Issue 8/9: precio 9223372036854775807 made every total (and the read models' $inc) overflow."""
    assert domain.validate_precio(domain.MAX_PRECIO) == domain.MAX_PRECIO
    with pytest.raises(InvalidArgument) as refused:
        domain.validate_precio(2**63 - 1)
    assert refused.value.metadata["field"] == "precio"
    assert domain.MAX_PRECIO * domain.MAX_INT32 < 2**63  # every ticket of the biggest event, summed
