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
    async with grpc.aio.insecure_channel(address) as channel:
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
