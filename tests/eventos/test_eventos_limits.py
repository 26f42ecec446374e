"""eventos' limits (issue 8): the message size, the caps of every field, short errors, bounded replies,
big seat maps (written as rows, read in pages), and money and counts that cannot overflow."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from eventflow.eventos.v1 import eventos_pb2 as pb
from eventflow.eventos.v1 import eventos_pb2_grpc
from eventos.config import Config
from eventos.server import create_app
from eventos import domain
from infra.errors import error_info
from callers import open_channel

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


# --- caps: a huge value is INVALID_ARGUMENT naming the field and its cap, in a short message ------------------

HUGE = "x" * 1_000_000  # under the 1 MiB message limit: it reaches the service
HUGE_UNICODE = "€" * 300_000


def _evento(**fields: Any) -> pb.Evento:
    values: dict[str, Any] = {"nombre": "Concierto", "lugar": "Antel Arena", "aforo_total": 10, "precio": 100}
    values.update(fields)
    evento = pb.Evento(**values)
    evento.fecha.FromDatetime(datetime(2030, 1, 1, tzinfo=UTC))
    return evento


def _masked(request: Any, mask: str, paths: list[str]) -> Any:
    getattr(request, mask).paths.extend(paths)
    return request


def _calls(huge: str) -> list[tuple[str, str, Any]]:
    """(rpc, field the error names, request) for every string and list of every request."""
    return [
        ("GetEvento", "id", pb.GetEventoRequest(id=huge)),
        ("DeleteEvento", "id", pb.DeleteEventoRequest(id=huge)),
        ("UpdateEvento", "evento.id", pb.UpdateEventoRequest(evento=_evento(id=huge))),
        ("CreateEvento", "nombre", pb.CreateEventoRequest(evento=_evento(nombre=huge))),
        ("CreateEvento", "lugar", pb.CreateEventoRequest(evento=_evento(lugar=huge))),
        ("CreateEvento", "moneda", pb.CreateEventoRequest(evento=_evento(moneda=huge))),
        ("CreateEvento", "asientos", pb.CreateEventoRequest(evento=_evento(aforo_total=0, asientos=["A-1", huge]))),
        ("UpdateEvento", "nombre", pb.UpdateEventoRequest(evento=_evento(id="e", nombre=huge))),
        ("UpdateEvento", "lugar", pb.UpdateEventoRequest(evento=_evento(id="e", lugar=huge))),
        ("ListEventos", "lugar", pb.ListEventosRequest(lugar=huge)),
        ("ListEventos", "page_token", pb.ListEventosRequest(page_token=huge)),
        ("ReservarEntradas", "evento_id", pb.ReservarEntradasRequest(evento_id=huge, reserva_id="r", cantidad=1)),
        ("ReservarEntradas", "reserva_id", pb.ReservarEntradasRequest(evento_id="e", reserva_id=huge, cantidad=1)),
        ("ReservarEntradas", "asientos",
         pb.ReservarEntradasRequest(evento_id="e", reserva_id="r", cantidad=1, asientos=[huge])),
        ("LiberarEntradas", "evento_id", pb.LiberarEntradasRequest(evento_id=huge, reserva_id="r")),
        ("LiberarEntradas", "reserva_id", pb.LiberarEntradasRequest(evento_id="e", reserva_id=huge)),
        ("GetEvento", "read_mask", _masked(pb.GetEventoRequest(id="e"), "read_mask", [huge])),
        ("UpdateEvento", "update_mask", _masked(pb.UpdateEventoRequest(evento=_evento(id="e")), "update_mask", [huge])),
    ]  # fmt: skip


@pytest.mark.parametrize("huge", [HUGE, HUGE_UNICODE], ids=["ascii", "unicode"])
async def test_every_huge_string_is_invalid_argument_with_a_short_message(eventos, huge: str) -> None:
    for rpc, field, request in _calls(huge):
        error = await _error(getattr(eventos.stub, rpc)(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (rpc, field, error.code(), error.details()[:200])
        info = error_info(error)
        assert info is not None and info.metadata["field"].startswith(field), (rpc, field, info)
        assert len(error.details()) < 200, (rpc, field, error.details()[:300])
        assert huge[:50] not in error.details(), (rpc, field)
        assert all(len(value) <= 200 for value in info.metadata.values())


async def test_lists_in_requests_are_capped(eventos) -> None:
    many_paths = _masked(pb.GetEventoRequest(id="e"), "read_mask", ["precio"] * 1000)
    error = await _error(eventos.stub.GetEvento(many_paths))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "at most 16 paths" in error.details()
    seats = [f"A-{i}" for i in range(1000)]
    error = await _error(eventos.reservar("e", "r", cantidad=1000, asientos=seats))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "at most 100 seats" in error.details()
    labels = [f"A-{i}" for i in range(50_001)]  # one seat more than a seat map may have (about 400 KB)
    error = await _error(eventos.create(asientos=labels, aforo_total=0))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "50000" in error.details()


async def test_unknown_and_taken_seats_are_listed_briefly(eventos) -> None:
    evento = await eventos.create(asientos=[f"A-{i}" for i in range(100)], aforo_total=0)
    error = await _error(eventos.reservar(evento.id, "r", cantidad=100, asientos=[f"Z-{i}" for i in range(100)]))
    assert eventos.reason(error) == "UNKNOWN_SEAT" and "and 90 more" in error.details()


# --- money and counts: nothing can overflow an int64 ---------------------------------------------------------

INT64_MAX = 2**63 - 1


def test_an_events_takings_fit_in_an_int64() -> None:
    assert domain.MAX_RECAUDADO == domain.MAX_PRECIO * domain.MAX_AFORO <= INT64_MAX
    assert domain.MAX_AFORO < domain.MAX_INT32


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"precio": INT64_MAX}, "precio"),
        ({"precio": domain.MAX_PRECIO + 1}, "precio"),
        ({"precio": -(2**63)}, "precio"),
        ({"aforo_total": 2**31 - 1}, "aforo_total"),
        ({"aforo_total": domain.MAX_AFORO + 1}, "aforo_total"),
    ],
)
async def test_out_of_bounds_money_and_counts_are_invalid_argument(eventos, fields: dict, field: str) -> None:
    error = await _error(eventos.create(**fields))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_info(error).metadata["field"] == field
    evento = await eventos.create()
    update = pb.UpdateEventoRequest(evento=_evento(id=evento.id, **fields))
    update.update_mask.paths.append(field)
    error = await _error(eventos.stub.UpdateEvento(update))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_info(error).metadata["field"] == field


async def test_the_bounds_themselves_are_allowed(eventos) -> None:
    evento = await eventos.create(precio=domain.MAX_PRECIO, aforo_total=domain.MAX_AFORO)
    assert (evento.precio, evento.aforo_total) == (domain.MAX_PRECIO, domain.MAX_AFORO)
    error = await _error(eventos.reservar(evento.id, "r", cantidad=2**31 - 1))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_info(error).metadata["field"] == "cantidad"
    taken = await eventos.reservar(evento.id, "r", cantidad=domain.MAX_AFORO)
    assert taken.entradas_disponibles == 0


# --- replies bounded by bytes ----------------------------------------------------------------------------------


async def test_a_page_of_big_events_stays_under_the_message_limit(start_app, eventos_config: Config) -> None:
    """page_size 500 of events with nombre and lugar at their cap would pass a 64 KiB limit: the page stops
    before it, and the next_page_token goes on from there (no event missed or repeated)."""
    limit = 64 * 1024
    address = await start_app(create_app(dataclasses.replace(eventos_config, max_message_bytes=limit)))
    async with open_channel(address) as channel:
        stub = eventos_pb2_grpc.EventosServiceStub(channel)
        created = []
        for n in range(300):
            evento = _evento(nombre=f"{n:03d}" + "n" * 197, lugar="l" * 200)
            evento.fecha.FromDatetime(datetime(2030, 1, 1, tzinfo=UTC) + timedelta(minutes=n))
            created.append((await stub.CreateEvento(pb.CreateEventoRequest(evento=evento))).id)
        listed, token, pages = [], "", 0
        while True:
            reply = await stub.ListEventos(pb.ListEventosRequest(page_size=500, page_token=token))
            assert reply.ByteSize() <= limit
            listed.extend(e.id for e in reply.eventos)
            pages, token = pages + 1, reply.next_page_token
            if not token:
                break
        assert listed == created and pages >= 3


# --- big seat maps: written as rows, read in pages --------------------------------------------------------------


def _filas(rows: int, seats: int, name: str = "PLATEA{:04d}") -> list[pb.FilaAsientos]:
    return [pb.FilaAsientos(fila=name.format(r), desde=1, hasta=seats) for r in range(rows)]


async def _all_seats(stub: Any, evento_id: str, limit: int | None = None, **fields: Any) -> tuple[list[pb.Asiento], int]:
    seats, token, pages = [], "", 0
    while True:
        reply = await stub.ListAsientos(pb.ListAsientosRequest(evento_id=evento_id, page_token=token, **fields))
        if limit is not None:
            assert reply.ByteSize() <= limit
        seats.extend(reply.asientos)
        pages, token = pages + 1, reply.next_page_token
        if not token:
            return seats, pages


@pytest.mark.slow
async def test_a_50000_seat_event_is_created_from_rows_and_read_in_pages(eventos) -> None:
    """50,000 seats as labels of 12 to 15 characters would not fit in a 1 MiB request, nor both seat lists in a
    1 MiB answer: as 500 rows the request is a few kilobytes; GetEvento leaves the lists out (or refuses them
    when asked by name), and ListAsientos pages the map, bounded by bytes."""
    filas = _filas(500, 100)
    request = pb.CreateEventoRequest(evento=_evento(aforo_total=0, filas=filas))
    assert request.ByteSize() < 16 * 1024
    created = await eventos.stub.CreateEvento(request, timeout=120)
    assert (created.aforo_total, created.entradas_disponibles, created.con_asientos) == (50_000, 50_000, True)
    assert not created.asientos and created.ByteSize() < 1024  # left out: too big for one answer
    got = await eventos.get(created.id)
    assert got.con_asientos and not got.asientos and not got.asientos_disponibles and got.aforo_total == 50_000
    asked = _masked(pb.GetEventoRequest(id=created.id), "read_mask", ["asientos", "asientos_disponibles"])
    error = await eventos.fails(eventos.stub.GetEvento(asked), grpc.StatusCode.FAILED_PRECONDITION, "SEAT_MAP_TOO_LARGE")
    assert "ListAsientos" in error.details()
    one = await eventos.stub.GetEvento(_masked(pb.GetEventoRequest(id=created.id), "read_mask", ["asientos_disponibles"]))
    assert len(one.asientos_disponibles) == 50_000  # one list alone (about 750 KB) fits

    expected = [f"PLATEA{r:04d}-{n}" for r in range(500) for n in range(1, 101)]
    first = await eventos.stub.ListAsientos(pb.ListAsientosRequest(evento_id=created.id))
    assert [s.etiqueta for s in first.asientos] == expected[:1000] and first.next_page_token  # default page: 1000
    seats, pages = await _all_seats(eventos.stub, created.id, limit=1 << 20, page_size=5000)
    assert [s.etiqueta for s in seats] == expected and all(s.disponible for s in seats) and pages == 10

    taken = await eventos.reservar(created.id, "r1", cantidad=2, asientos=["PLATEA0000-2", "PLATEA0499-100"])
    assert taken.entradas_disponibles == 49_998
    page = await eventos.stub.ListAsientos(pb.ListAsientosRequest(evento_id=created.id, page_size=3))
    assert [(s.etiqueta, s.disponible) for s in page.asientos] == [
        ("PLATEA0000-1", True), ("PLATEA0000-2", False), ("PLATEA0000-3", True)
    ]
    free = await eventos.stub.ListAsientos(pb.ListAsientosRequest(evento_id=created.id, page_size=3, solo_disponibles=True))
    assert [s.etiqueta for s in free.asientos] == ["PLATEA0000-1", "PLATEA0000-3", "PLATEA0000-4"]


async def test_seat_pages_are_bounded_by_bytes_and_skip_taken_seats(start_app, eventos_config: Config) -> None:
    limit = 64 * 1024
    address = await start_app(create_app(dataclasses.replace(eventos_config, max_message_bytes=limit)))
    async with open_channel(address) as channel:
        stub = eventos_pb2_grpc.EventosServiceStub(channel)
        created = await stub.CreateEvento(pb.CreateEventoRequest(evento=_evento(aforo_total=0, filas=_filas(60, 100))))
        assert created.aforo_total == 6000 and not created.asientos  # 6,000 labels of 13 characters: > 64 KiB
        page = await stub.ListAsientos(pb.ListAsientosRequest(evento_id=created.id, page_size=5000))
        assert 1000 < len(page.asientos) < 5000 and page.ByteSize() <= limit
        seats, _ = await _all_seats(stub, created.id, limit=limit, page_size=5000)
        assert len(seats) == 6000 and len({s.etiqueta for s in seats}) == 6000
        # Sell rows 0 to 54 (5,500 seats) but for one seat: the available ones are found past them.
        labels = [s.etiqueta for s in seats[:5500] if s.etiqueta != "PLATEA0030-7"]
        for n, first in enumerate(range(0, len(labels), 100)):
            chunk = labels[first : first + 100]
            await stub.ReservarEntradas(
                pb.ReservarEntradasRequest(evento_id=created.id, reserva_id=f"r{n}", cantidad=len(chunk), asientos=chunk)
            )
        free, pages = await _all_seats(stub, created.id, limit=limit, page_size=10, solo_disponibles=True)
        assert [s.etiqueta for s in free][:3] == ["PLATEA0030-7", "PLATEA0055-1", "PLATEA0055-2"]
        assert len(free) == 501 and all(s.disponible for s in free) and pages > 2


async def test_list_asientos_of_unseated_unknown_and_forged(eventos) -> None:
    plain = await eventos.create()
    reply = await eventos.stub.ListAsientos(pb.ListAsientosRequest(evento_id=plain.id))
    assert not reply.asientos and not reply.next_page_token
    await eventos.fails(
        eventos.stub.ListAsientos(pb.ListAsientosRequest(evento_id="0" * 24)), grpc.StatusCode.NOT_FOUND, "EVENTO_NOT_FOUND"
    )
    seated = await eventos.create(aforo_total=0, filas=_filas(2, 10))
    first = await eventos.stub.ListAsientos(pb.ListAsientosRequest(evento_id=seated.id, page_size=5))
    mac_flipped = first.next_page_token[:-1] + ("1" if first.next_page_token.endswith("0") else "0")  # hex MAC
    for token in ("garbage", mac_flipped):
        await eventos.fails(
            eventos.stub.ListAsientos(pb.ListAsientosRequest(evento_id=seated.id, page_token=token)),
            grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN",
        )  # fmt: skip
    await eventos.fails(  # a token of another listing (only the available seats)
        eventos.stub.ListAsientos(
            pb.ListAsientosRequest(evento_id=seated.id, page_token=first.next_page_token, solo_disponibles=True)
        ),
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN",
    )  # fmt: skip


async def test_rows_and_labels_make_one_seat_map(eventos) -> None:
    created = await eventos.create(aforo_total=0, asientos=["Palco-1"], filas=[pb.FilaAsientos(fila=" A ", desde=9, hasta=11)])
    assert list(created.asientos) == ["Palco-1", "A-9", "A-10", "A-11"] == list(created.asientos_disponibles)
    assert created.aforo_total == 4


@pytest.mark.parametrize(
    ("asientos", "filas", "message"),
    [
        ([], [("", 1, 2)], "must not be empty"),
        ([], [("A", 0, 2)], "1 <= desde <= hasta"),
        ([], [("A", 5, 4)], "1 <= desde <= hasta"),
        ([], [("A", 1, 100_000)], "1 <= desde <= hasta"),
        ([], [("A" * 11, 1, 2)], "at most 10"),
        ([], [("A", 1, 99_999)], "at most 50000 seats"),
        ([], [(f"F{r}", 1, 99_999) for r in range(1000)], "at most 50000 seats"),  # judged before a label is made
        ([], [(f"F{r}", 1, 1) for r in range(1001)], "at most 1000 rows"),
        (["A-1"], [("A", 1, 2)], "appears more than once"),
    ],
)
async def test_bad_rows_are_invalid_argument(eventos, asientos: list[str], filas: list, message: str) -> None:
    rows = [pb.FilaAsientos(fila=f, desde=d, hasta=h) for f, d, h in filas]
    error = await eventos.fails(
        eventos.create(aforo_total=0, asientos=asientos, filas=rows), grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED"
    )
    assert message in error.details() and error_info(error).metadata["field"] in ("filas", "asientos")
