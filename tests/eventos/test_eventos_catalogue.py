"""EventosService over a real channel against a real MongoDB-compatible server: create, get, list, update, delete."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import field_mask_pb2

from eventflow.eventos.v1 import eventos_pb2

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
BASE = datetime(2027, 1, 1, 20, 0, tzinfo=UTC)


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


class TestCreateAndGet:
    async def test_create_then_get(self, eventos) -> None:
        created = await eventos.create(nombre="  Concierto Arctic Monkeys ", moneda="", precio=250_000)
        assert created.id
        assert created.nombre == "Concierto Arctic Monkeys"
        assert created.moneda == "UYU"
        assert created.entradas_disponibles == created.aforo_total == 10
        assert created.fecha.ToDatetime(tzinfo=UTC) == datetime(2027, 3, 14, 21, 0, tzinfo=UTC)
        fetched = await eventos.stub.GetEvento(eventos_pb2.GetEventoRequest(id=created.id))
        assert fetched == created

    async def test_output_only_fields_are_ignored(self, eventos) -> None:
        created = await eventos.create(id="mine", entradas_disponibles=3, asientos_disponibles=["X"])
        assert created.id != "mine"
        assert created.entradas_disponibles == 10
        assert list(created.asientos_disponibles) == []

    async def test_seated_event(self, eventos) -> None:
        seats = ["A-1", "A-2", "B-1"]
        created = await eventos.create(aforo_total=0, asientos=seats, moneda="USD")
        assert created.aforo_total == created.entradas_disponibles == 3
        assert list(created.asientos) == list(created.asientos_disponibles) == seats

    async def test_a_list_leaves_the_seat_maps_out_and_stays_small(self, eventos) -> None:
        """Issue 8's attack: six 50,000-seat events made every ListEventos a 9 MB answer."""
        seats = [f"S-{i}" for i in range(20_000)]
        big = await eventos.create(aforo_total=0, asientos=seats)
        page = await eventos.stub.ListEventos(eventos_pb2.ListEventosRequest())
        [listed] = [e for e in page.eventos if e.id == big.id]
        assert listed.con_asientos and list(listed.asientos) == list(listed.asientos_disponibles) == []
        assert page.ByteSize() < 2_000
        fetched = await eventos.stub.GetEvento(eventos_pb2.GetEventoRequest(id=big.id))
        assert len(fetched.asientos_disponibles) == 20_000  # GetEvento answers the seats

    @pytest.mark.parametrize(
        ("fields", "field"),
        [
            ({"nombre": " "}, "nombre"),
            ({"nombre": "n" * 201}, "nombre"),
            ({"lugar": ""}, "lugar"),
            ({"lugar": "l" * 201}, "lugar"),
            ({"fecha": None}, "fecha"),
            ({"aforo_total": 0}, "aforo_total"),
            ({"aforo_total": -1}, "aforo_total"),
            ({"precio": -5}, "precio"),
            ({"moneda": "pesos"}, "moneda"),
            ({"asientos": ["A-1", "A-1"], "aforo_total": 0}, "asientos"),
            ({"asientos": ["A-1", ""], "aforo_total": 0}, "asientos"),
            ({"asientos": ["A-" + "9" * 19], "aforo_total": 0}, "asientos"),
            ({"asientos": ["A-1", "A-2"], "aforo_total": 3}, "aforo_total"),
            ({"max_por_usuario": -1}, "max_por_usuario"),
            ({"max_por_usuario": 11}, "max_por_usuario"),
            ({"asientos": ["A-1", "A-2"], "aforo_total": 0, "max_por_usuario": 3}, "max_por_usuario"),
        ],
    )
    async def test_each_validation_rule(self, eventos, fields: dict[str, object], field: str) -> None:
        error = await eventos.fails(eventos.create(**fields), INVALID, "VALIDATION_FAILED")
        assert field in error.details()

    async def test_get_errors(self, eventos) -> None:
        await eventos.fails(eventos.stub.GetEvento(eventos_pb2.GetEventoRequest(id="")), INVALID, "VALIDATION_FAILED")
        for unknown in ("665f1c000000000000000000", "not-an-object-id"):
            await eventos.fails(
                eventos.stub.GetEvento(eventos_pb2.GetEventoRequest(id=unknown)),
                grpc.StatusCode.NOT_FOUND,
                "EVENTO_NOT_FOUND",
            )


class TestList:
    async def list_all(self, eventos, page_size: int, **filters: object) -> list[eventos_pb2.Evento]:
        """Walk every page; check each page's size and that the last one has no token."""
        found: list[eventos_pb2.Evento] = []
        token = ""
        while True:
            request = eventos_pb2.ListEventosRequest(page_size=page_size, page_token=token, **filters)  # type: ignore[arg-type]
            page = await eventos.stub.ListEventos(request)
            assert len(page.eventos) <= page_size
            found.extend(page.eventos)
            token = page.next_page_token
            if not token:
                return found
            assert len(page.eventos) == page_size

    async def test_ordered_by_fecha_then_id_across_pages(self, eventos) -> None:
        # Several events share a fecha, so the id tie-break must keep pages from overlapping or skipping.
        fechas = [BASE + timedelta(days=d % 4, milliseconds=-(d % 4) * 7) for d in range(11)]
        created = await asyncio.gather(*(eventos.create(nombre=f"e{i}", fecha=f) for i, f in enumerate(fechas)))
        expected = sorted(created, key=lambda e: (e.fecha.ToDatetime(), e.id))
        for size in (1, 3, 4, 11, 50):
            listed = await self.list_all(eventos, size)
            assert [e.id for e in listed] == [e.id for e in expected]

    async def test_filters(self, eventos) -> None:
        at = {}
        for days, lugar in [(0, "Antel Arena"), (1, "Teatro Solís"), (2, "Antel Arena"), (3, "Antel Arena")]:
            at[days] = await eventos.create(lugar=lugar, fecha=BASE + timedelta(days=days))
        desde = eventos_pb2.ListEventosRequest().desde
        desde.FromDatetime(BASE + timedelta(days=1))
        hasta = eventos_pb2.ListEventosRequest().hasta
        hasta.FromDatetime(BASE + timedelta(days=2))
        by_lugar = await self.list_all(eventos, 1, lugar="Antel Arena")
        assert [e.id for e in by_lugar] == [at[0].id, at[2].id, at[3].id]
        between = await self.list_all(eventos, 1, desde=desde, hasta=hasta)  # inclusive bounds
        assert [e.id for e in between] == [at[1].id, at[2].id]
        both = await self.list_all(eventos, 5, lugar="Antel Arena", desde=desde)
        assert [e.id for e in both] == [at[2].id, at[3].id]
        # Bounds finer than the stored milliseconds are rounded inward.
        desde.FromDatetime(BASE + timedelta(microseconds=1))
        hasta.FromDatetime(BASE + timedelta(days=3, microseconds=-1))
        inner = await self.list_all(eventos, 5, desde=desde, hasta=hasta)
        assert [e.id for e in inner] == [at[1].id, at[2].id]
        assert await self.list_all(eventos, 5, lugar="Nowhere") == []
        # The Timestamp range's last instant rounds up past the last millisecond (found by tests/fuzz: INTERNAL).
        last = eventos_pb2.ListEventosRequest(desde={"seconds": 253_402_300_799, "nanos": 999_999_999}).desde
        assert await self.list_all(eventos, 5, desde=last) == []

    async def test_upcoming_by_default_and_past_ones_when_asked(self, eventos) -> None:
        """Issue 11: ListEventos listed events that had happened. Time passing is a write to the store here (the
        service refuses to create or move an event into the past)."""
        soon = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
        happened, later = [await eventos.create(nombre=n, fecha=soon + timedelta(hours=h)) for n, h in (("a", 0), ("b", 1))]
        await eventos.database["eventos"].update_one(
            {"_id": happened.id}, {"$set": {"fecha": datetime.now(UTC) - timedelta(days=2)}}
        )
        assert [e.id for e in await self.list_all(eventos, 1)] == [later.id]
        everything = await self.list_all(eventos, 1, incluir_pasados=True)
        assert [e.id for e in everything] == [happened.id, later.id]
        old = eventos_pb2.ListEventosRequest().desde
        old.FromDatetime(datetime.now(UTC) - timedelta(days=30))
        assert [e.id for e in await self.list_all(eventos, 5, desde=old)] == [later.id]  # desde cannot reach back
        # A page token is bound to the upcoming-only listing: not valid for the one with past events.
        first = await eventos.stub.ListEventos(eventos_pb2.ListEventosRequest(page_size=1, incluir_pasados=True))
        assert first.next_page_token
        await eventos.fails(
            eventos.stub.ListEventos(eventos_pb2.ListEventosRequest(page_token=first.next_page_token)),
            INVALID, "INVALID_PAGE_TOKEN",
        )  # fmt: skip

    async def test_a_fecha_in_the_past_is_refused_on_create_and_update(self, eventos) -> None:
        yesterday = datetime.now(UTC) - timedelta(days=1)
        refused = await eventos.fails(eventos.create(fecha=yesterday), INVALID, "FECHA_IN_PAST")
        assert eventos.error_metadata(refused)["field"] == "fecha" and "fecha" in refused.details()
        created = await eventos.create()
        moved = eventos_pb2.Evento(id=created.id)
        moved.fecha.FromDatetime(yesterday)
        request = eventos_pb2.UpdateEventoRequest(evento=moved, update_mask=mask("fecha"))
        await eventos.fails(eventos.stub.UpdateEvento(request), INVALID, "FECHA_IN_PAST")
        assert (await eventos.get(created.id)).fecha == created.fecha

    async def test_page_size_default_and_cap(self, eventos) -> None:
        await asyncio.gather(*(eventos.create(nombre=f"e{i}") for i in range(3)))
        page = await eventos.stub.ListEventos(eventos_pb2.ListEventosRequest(page_size=0))
        assert len(page.eventos) == 3 and page.next_page_token == ""
        page = await eventos.stub.ListEventos(eventos_pb2.ListEventosRequest(page_size=2**31 - 1))
        assert len(page.eventos) == 3

    async def test_bad_requests(self, eventos) -> None:
        await asyncio.gather(*(eventos.create(nombre=f"e{i}") for i in range(3)))
        list_ = eventos.stub.ListEventos
        await eventos.fails(list_(eventos_pb2.ListEventosRequest(page_size=-1)), INVALID, "VALIDATION_FAILED")
        await eventos.fails(
            list_(eventos_pb2.ListEventosRequest(page_token="garbage")), INVALID, "INVALID_PAGE_TOKEN"
        )
        first = await list_(eventos_pb2.ListEventosRequest(page_size=1))
        body, mac = first.next_page_token.rsplit(".", 1)
        forged = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + mac
        await eventos.fails(list_(eventos_pb2.ListEventosRequest(page_token=forged)), INVALID, "INVALID_PAGE_TOKEN")
        # A token is bound to the filters it was issued for.
        await eventos.fails(
            list_(eventos_pb2.ListEventosRequest(page_token=first.next_page_token, lugar="Antel Arena")),
            INVALID,
            "INVALID_PAGE_TOKEN",
        )
        later = eventos_pb2.ListEventosRequest()
        later.desde.FromDatetime(BASE + timedelta(days=2))
        later.hasta.FromDatetime(BASE + timedelta(days=1))
        error = await eventos.fails(list_(later), INVALID, "VALIDATION_FAILED")
        assert "desde" in error.details()


class TestUpdate:
    async def update(self, eventos, evento: eventos_pb2.Evento, *paths: str) -> eventos_pb2.Evento:
        return await eventos.stub.UpdateEvento(eventos_pb2.UpdateEventoRequest(evento=evento, update_mask=mask(*paths)))

    async def test_masked_fields_only(self, eventos) -> None:
        created = await eventos.create()
        change = eventos_pb2.Evento(id=created.id, nombre="Otro nombre", lugar="", precio=1)
        updated = await self.update(eventos, change, "nombre")
        assert updated.nombre == "Otro nombre"
        assert updated.lugar == created.lugar and updated.precio == created.precio
        stored = await eventos.stub.GetEvento(eventos_pb2.GetEventoRequest(id=created.id))
        assert stored == updated

    async def test_empty_mask_updates_every_updatable_field(self, eventos) -> None:
        created = await eventos.create()
        change = eventos_pb2.Evento(
            id=created.id, nombre="N", lugar="L", aforo_total=20, precio=5, moneda="USD"
        )
        change.fecha.FromDatetime(BASE)
        updated = await self.update(eventos, change)
        assert (updated.nombre, updated.lugar, updated.aforo_total, updated.precio, updated.moneda) == (
            "N", "L", 20, 5, "USD"
        )
        assert updated.entradas_disponibles == 20
        assert updated.fecha.ToDatetime(tzinfo=UTC) == BASE

    async def test_capacity_moves_available_tickets(self, eventos) -> None:
        created = await eventos.create(aforo_total=10)
        await eventos.reservar(created.id, "r1", 4)
        grown = await self.update(eventos, eventos_pb2.Evento(id=created.id, aforo_total=15), "aforo_total")
        assert (grown.aforo_total, grown.entradas_disponibles) == (15, 11)
        shrunk = await self.update(eventos, eventos_pb2.Evento(id=created.id, aforo_total=4), "aforo_total")
        assert (shrunk.aforo_total, shrunk.entradas_disponibles) == (4, 0)
        await eventos.check_invariant(created.id)
        error = await eventos.fails(
            self.update(eventos, eventos_pb2.Evento(id=created.id, aforo_total=3), "aforo_total"),
            PRECONDITION,
            "CAPACITY_BELOW_SOLD",
        )
        assert "4" in error.details()
        await eventos.check_invariant(created.id)

    async def test_concurrent_shrink_and_reservations_keep_the_invariant(self, eventos) -> None:
        created = await eventos.create(aforo_total=20)
        shrink = self.update(eventos, eventos_pb2.Evento(id=created.id, aforo_total=10), "aforo_total")
        takes = [eventos.reservar(created.id, f"r{i}", 1) for i in range(15)]
        results = await asyncio.gather(shrink, *takes, return_exceptions=True)
        for result in results:
            if isinstance(result, grpc.aio.AioRpcError):
                assert eventos.reason(result) in ("SOLD_OUT", "CAPACITY_BELOW_SOLD")
        final = await eventos.check_invariant(created.id)
        assert final.aforo_total in (10, 20)

    async def test_max_por_usuario(self, eventos) -> None:
        created = await eventos.create(aforo_total=10, max_por_usuario=4)
        assert created.max_por_usuario == 4 and (await eventos.get(created.id)).max_por_usuario == 4
        listed = await eventos.stub.ListEventos(eventos_pb2.ListEventosRequest())
        assert [e.max_por_usuario for e in listed.eventos] == [4]
        lowered = await self.update(eventos, eventos_pb2.Evento(id=created.id, max_por_usuario=2), "max_por_usuario")
        assert lowered.max_por_usuario == 2 and lowered.inventario_version == created.inventario_version
        error = await eventos.fails(
            self.update(eventos, eventos_pb2.Evento(id=created.id, max_por_usuario=11), "max_por_usuario"),
            INVALID,
            "VALIDATION_FAILED",
        )
        assert "max_por_usuario" in error.details()
        await eventos.fails(
            self.update(eventos, eventos_pb2.Evento(id=created.id, max_por_usuario=-3), "max_por_usuario"),
            INVALID,
            "VALIDATION_FAILED",
        )
        below = eventos_pb2.Evento(id=created.id, aforo_total=1)  # the capacity cannot go below the limit
        error = await eventos.fails(self.update(eventos, below, "aforo_total"), INVALID, "VALIDATION_FAILED")
        assert "max_por_usuario (2)" in error.details()
        change = eventos_pb2.Evento(id=created.id, aforo_total=1, max_por_usuario=1)
        both = await self.update(eventos, change, "aforo_total", "max_por_usuario")
        assert (both.aforo_total, both.max_por_usuario) == (1, 1)
        removed = await self.update(eventos, eventos_pb2.Evento(id=created.id), "max_por_usuario")
        assert removed.max_por_usuario == 0

    async def test_seated_capacity_cannot_change(self, eventos) -> None:
        created = await eventos.create(aforo_total=0, asientos=["A-1", "A-2"])
        await eventos.fails(
            self.update(eventos, eventos_pb2.Evento(id=created.id, aforo_total=5), "aforo_total"),
            PRECONDITION,
            "SEATED_EVENT",
        )
        same = await self.update(eventos, eventos_pb2.Evento(id=created.id, aforo_total=2, nombre="X"), "aforo_total", "nombre")
        assert same.nombre == "X" and same.aforo_total == 2 and list(same.asientos) == ["A-1", "A-2"]

    @pytest.mark.parametrize("path", ["asientos", "entradas_disponibles", "asientos_disponibles", "id", "nope"])
    async def test_bad_mask(self, eventos, path: str) -> None:
        created = await eventos.create()
        await eventos.fails(
            self.update(eventos, eventos_pb2.Evento(id=created.id, nombre="x"), "nombre", path),
            INVALID,
            "INVALID_UPDATE_MASK",
        )

    async def test_validation_and_not_found(self, eventos) -> None:
        created = await eventos.create()
        await eventos.fails(
            self.update(eventos, eventos_pb2.Evento(id=created.id, nombre=" "), "nombre"), INVALID, "VALIDATION_FAILED"
        )
        await eventos.fails(
            self.update(eventos, eventos_pb2.Evento(id=created.id), "fecha"), INVALID, "VALIDATION_FAILED"
        )
        await eventos.fails(
            self.update(eventos, eventos_pb2.Evento(id=created.id, aforo_total=0), "aforo_total"),
            INVALID,
            "VALIDATION_FAILED",
        )
        await eventos.fails(
            self.update(eventos, eventos_pb2.Evento(id="nope", nombre="x"), "nombre"),
            grpc.StatusCode.NOT_FOUND,
            "EVENTO_NOT_FOUND",
        )
        await eventos.fails(self.update(eventos, eventos_pb2.Evento(nombre="x"), "nombre"), INVALID, "VALIDATION_FAILED")


class TestDelete:
    async def delete(self, eventos, evento_id: str) -> object:
        return await eventos.stub.DeleteEvento(eventos_pb2.DeleteEventoRequest(id=evento_id))

    async def test_delete(self, eventos) -> None:
        created = await eventos.create()
        await self.delete(eventos, created.id)
        await eventos.fails(
            eventos.stub.GetEvento(eventos_pb2.GetEventoRequest(id=created.id)),
            grpc.StatusCode.NOT_FOUND,
            "EVENTO_NOT_FOUND",
        )
        await eventos.fails(self.delete(eventos, created.id), grpc.StatusCode.NOT_FOUND, "EVENTO_NOT_FOUND")
        await eventos.fails(self.delete(eventos, ""), INVALID, "VALIDATION_FAILED")

    async def test_refused_while_tickets_are_held_allowed_once_released(self, eventos) -> None:
        created = await eventos.create()
        await eventos.reservar(created.id, "r1", 2)
        refused = await eventos.fails(self.delete(eventos, created.id), PRECONDITION, "HAS_SOLD_TICKETS")
        assert "2 of its 10 tickets" in refused.details() and "cancel" in refused.details()
        assert eventos.error_metadata(refused)["tomadas"] == "2"
        await eventos.check_invariant(created.id)
        await eventos.liberar(created.id, "r1")
        await self.delete(eventos, created.id)

    async def test_delete_racing_a_reservation(self, eventos) -> None:
        # Either the reservation lands first (delete refused) or the delete does (reservation NOT_FOUND).
        for i in range(5):
            created = await eventos.create()
            reserved, deleted = await asyncio.gather(
                eventos.reservar(created.id, f"r{i}", 1), self.delete(eventos, created.id), return_exceptions=True
            )
            if isinstance(deleted, grpc.aio.AioRpcError):
                assert eventos.reason(deleted) == "HAS_SOLD_TICKETS"
                assert not isinstance(reserved, Exception)
                await eventos.check_invariant(created.id)
            else:
                assert isinstance(reserved, grpc.aio.AioRpcError)
                assert eventos.reason(reserved) == "EVENTO_NOT_FOUND"

    @pytest.mark.parametrize("seated", [False, True])
    async def test_delete_racing_a_burst_of_takes(self, eventos, seated: bool) -> None:
        """Takes (several go together in one transaction) and a delete, interleaved: after the dust settles
        either the event exists with every successful take and its invariant, or it is gone, no take
        succeeded and nothing of it is left in the inventory."""
        deleted_rounds = refused_rounds = 0
        for round_ in range(12):
            seats = [f"S-{n}" for n in range(8)]
            created = await (eventos.create(aforo_total=0, asientos=seats) if seated else eventos.create(aforo_total=8))

            async def take(n: int, evento_id: str = created.id) -> object:
                await asyncio.sleep(0.001 * (n % 4))
                return await eventos.reservar(evento_id, f"r{n}", 1, [f"S-{n}"] if seated else None)

            async def delete(evento_id: str = created.id) -> object:
                await asyncio.sleep(0.001 * (round_ % 5))
                return await self.delete(eventos, evento_id)

            *takes, deleted = await asyncio.gather(*(take(n) for n in range(8)), delete(), return_exceptions=True)
            succeeded = [t for t in takes if not isinstance(t, BaseException)]
            failed = [t for t in takes if isinstance(t, BaseException)]
            assert all(isinstance(t, grpc.aio.AioRpcError) for t in failed), failed
            if isinstance(deleted, grpc.aio.AioRpcError):
                refused_rounds += 1
                assert eventos.reason(deleted) == "HAS_SOLD_TICKETS", deleted.details()
                assert succeeded, "the delete was refused, so some take had landed"
                assert not failed, [t.details() for t in failed]  # every take fits: only a deletion stops one
                final = await eventos.check_invariant(created.id)
                assert final.entradas_disponibles == 8 - len(succeeded)
                await eventos.fails(self.delete(eventos, created.id), PRECONDITION, "HAS_SOLD_TICKETS")
            else:
                assert not isinstance(deleted, BaseException), deleted
                deleted_rounds += 1
                assert not succeeded, "a take succeeded on an event that was deleted"
                assert {eventos.reason(t) for t in failed} == {"EVENTO_NOT_FOUND"}
                await eventos.fails(eventos.get(created.id), grpc.StatusCode.NOT_FOUND, "EVENTO_NOT_FOUND")
                left = await eventos.database["inventario"].count_documents({"evento_id": created.id})
                assert left == 0, f"{left} inventory documents of a deleted event"
        print(f"\ndelete won {deleted_rounds} rounds, the takes {refused_rounds}")


class TestReadMask:
    async def get(self, eventos, evento_id: str, *paths: str) -> eventos_pb2.Evento:
        return await eventos.stub.GetEvento(eventos_pb2.GetEventoRequest(id=evento_id, read_mask=mask(*paths)))

    async def test_only_the_named_fields(self, eventos) -> None:
        created = await eventos.create(aforo_total=0, asientos=["A-1", "A-2"])
        masked = await self.get(eventos, created.id, "con_asientos", "precio", "entradas_disponibles")
        assert masked == eventos_pb2.Evento(con_asientos=True, precio=created.precio, entradas_disponibles=2)
        assert await self.get(eventos, created.id) == created  # empty: every field
        seats = await self.get(eventos, created.id, "id", "asientos_disponibles")
        assert (seats.id, list(seats.asientos_disponibles), list(seats.asientos)) == (created.id, ["A-1", "A-2"], [])

    @pytest.mark.parametrize("path", ["color", "reservas", "asientos.0", ""])
    async def test_unknown_field(self, eventos, path: str) -> None:
        created = await eventos.create()
        error = await eventos.fails(self.get(eventos, created.id, "fecha", path), INVALID, "INVALID_READ_MASK")
        assert "read_mask" in error.details()


class TestInventarioVersion:
    async def test_every_inventory_change_and_only_those(self, eventos) -> None:
        created = await eventos.create(aforo_total=10)
        assert (created.inventario_version, created.con_asientos) == (0, False)
        assert (await eventos.reservar(created.id, "r1", 2)).inventario_version == 1
        assert (await eventos.reservar(created.id, "r1", 2)).inventario_version == 1  # a retry changes nothing
        updated = await eventos.stub.UpdateEvento(
            eventos_pb2.UpdateEventoRequest(evento=eventos_pb2.Evento(id=created.id, nombre="Otro"), update_mask=mask("nombre"))
        )
        assert updated.inventario_version == 1  # not an inventory change
        grown = await eventos.stub.UpdateEvento(
            eventos_pb2.UpdateEventoRequest(evento=eventos_pb2.Evento(id=created.id, aforo_total=12), update_mask=mask("aforo_total"))
        )
        assert (grown.entradas_disponibles, grown.inventario_version) == (10, 2)
        given = await eventos.liberar(created.id, "r1")
        assert (given.cantidad, given.entradas_disponibles, given.inventario_version) == (2, 12, 3)
        nothing = await eventos.liberar(created.id, "never")
        assert (nothing.cantidad, list(nothing.asientos), nothing.inventario_version) == (0, [], 3)
        error = await eventos.fails(eventos.reservar(created.id, "r2", 13), PRECONDITION, "SOLD_OUT")
        info = eventos.error_metadata(error)
        assert (info["disponibles"], info["inventario_version"]) == ("12", "3")
        assert (await eventos.get(created.id)).inventario_version == 3
