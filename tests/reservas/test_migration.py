"""An upgrade from c6109af: purchases made before it are repeated, cancelled and bought next to after it.

The purchases are made through the whole system, then what c6109af stored differently is put back in its
shape, as an upgrade would find it: eventos' events hold their seats, allocations and tombstones inside
the event document (no `inventario`), the idempotency keys live in `idempotencia` (not in `saga_leases`),
and Redis holds no admission gate. Then eventos and a new reservas start on that data (after no earlier
migration, after an interrupted one, or after a complete one), and everything is checked through the
RPCs, with the DESIGN.md invariants at the end.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
import redis.asyncio
from conftest import CANCELADA, CONFIRMADA, World

from eventflow.eventos.v1 import eventos_pb2, eventos_pb2_grpc
from eventos.config import Config as EventosConfig
from eventos.repository import EventoRepository
from eventos.server import create_app as create_eventos
from infra.server import GrpcApp
from reservas.leases import LeaseStore
from reservas.server import create_app as create_reservas
from callers import AUTH, PAGE_TOKEN_KEY, open_channel

SEATS = ["A-1", "A-2", "A-3", "A-4"]


async def ready(app: GrpcApp) -> GrpcApp:
    return app


async def as_c6109af_stored_it(world: World) -> None:
    """Rewrite eventos' events and reservas' keys in c6109af's shapes, and forget the gate (it had none)."""
    eventos = world.db("eventos")
    async for evento in eventos["eventos"].find({}):
        eid = evento["_id"]
        inventory = [doc async for doc in eventos["inventario"].find({"evento_id": eid})]
        plano = next((doc["asientos"] for doc in inventory if doc["tipo"] == "plano"), [])
        free = [doc["asiento"] for doc in inventory if doc["tipo"] == "asiento" and doc["reserva_id"] is None]
        allocations = [doc for doc in inventory if doc["tipo"] == "reserva"]
        await eventos["eventos"].update_one(
            {"_id": eid},
            {
                "$unset": {"con_asientos": "", "inventario_version": ""},
                "$set": {
                    "asientos": plano,
                    "asientos_disponibles": sorted(free, reverse=True),  # c6109af kept them in any order
                    "reservas": [
                        {"reserva_id": a["reserva_id"], "cantidad": a["cantidad"], "asientos": a["asientos"]}
                        for a in allocations
                        if not a["liberada"]
                    ],
                    "reservas_liberadas": [a["reserva_id"] for a in allocations if a["liberada"]],
                },
            },
        )
        await eventos["inventario"].delete_many({"evento_id": eid})
    reservas = world.db("reservas")
    async for lease in reservas["saga_leases"].find({"clave": {"$exists": True}}):
        await reservas["idempotencia"].insert_one(
            {"_id": lease["clave"], "reserva_id": lease["_id"], "huella": lease["huella"], "creada": lease["creada"]}
        )
        await reservas["saga_leases"].update_one({"_id": lease["_id"]}, {"$unset": {"clave": "", "huella": "", "creada": ""}})
    r = redis.asyncio.Redis.from_url(world.redis_url)
    try:
        async for evento in eventos["eventos"].find({}, {"_id": 1}):
            gate = [k async for k in r.scan_iter(match=f"gate:{{{evento['_id']}}}*")]
            if gate:
                await r.delete(*gate)
    finally:
        await r.aclose()


async def no_earlier_run(world: World) -> None:
    pass


async def interrupted(world: World) -> None:
    """A run that died half-way: the events' inventory written, no event rewritten; one key given, not deleted."""
    repository = EventoRepository(world.db("eventos"))
    async for evento in world.db("eventos")["eventos"].find({}):
        await repository._copy_legacy_inventory(evento)
    reservas = world.db("reservas")
    key = await reservas["idempotencia"].find_one({})
    assert key is not None
    await reservas["saga_leases"].update_one(
        {"_id": key["reserva_id"]}, {"$set": {"clave": key["_id"], "huella": key["huella"], "creada": key["creada"]}}
    )


async def complete(world: World) -> None:
    """A complete run, so the servers' is the second."""
    repository = EventoRepository(world.db("eventos"))
    await repository.ensure_indexes()
    assert await repository.migrate_legacy() == 2
    leases = LeaseStore(world.db("reservas"), "earlier")
    await leases.ensure_indexes()
    await leases.migrate_legacy_keys()


EARLIER_RUNS: dict[str, Callable[[World], Awaitable[None]]] = {
    "none": no_earlier_run,
    "interrupted": interrupted,
    "complete": complete,
}


async def upgrade(world: World) -> None:
    """eventos restarted on the same address and database; a new reservas (both SERVING: migrated)."""
    port = int(world.eventos_address.rsplit(":", 1)[1])
    config = EventosConfig(
        auth=AUTH, port=port, bind_host="127.0.0.1", mongodb_uri=world.mongo_uri, mongodb_database=world.dbs["eventos"],
        page_token_key=PAGE_TOKEN_KEY,
    )
    world.eventos_app = await create_eventos(config)
    await world.start_app(ready(world.eventos_app))
    channel = open_channel(world.eventos_address)
    world.channels.append(channel)
    world.eventos = eventos_pb2_grpc.EventosServiceStub(channel)
    world.reservas = world.connect(await world.start_app(create_reservas(world.reservas_config())))


@pytest.mark.parametrize("earlier", list(EARLIER_RUNS))
async def test_purchases_made_before_an_upgrade_from_c6109af(world: World, earlier: str) -> None:
    # Before: c6109af's reservas sells the last ticket of a small event and two seats; one purchase is cancelled.
    before = await create_reservas(world.reservas_config())
    world.reservas = world.connect(await world.start_app(ready(before)))
    u1, u2 = await world.usuarios_n(2)
    plain, seated = await world.evento(aforo=3), await world.evento(asientos=SEATS)
    requests: dict[str, Any] = {
        "plain": world.request(u1, plain.id, cantidad=2, key="k-plain"),
        "cancelled": world.request(u1, plain.id, cantidad=1, key="k-cancelled"),
        "seated": world.request(u2, seated.id, cantidad=2, asientos=["A-1", "A-3"], key="k-seated"),
    }
    bought = {name: await world.reservar(request) for name, request in requests.items()}
    assert all(r.estado == CONFIRMADA for r in bought.values())
    assert (await world.cancelar(bought["cancelled"].id)).estado == CANCELADA
    requests["last"] = world.request(u2, plain.id, cantidad=1, key="k-last")
    bought["last"] = await world.reservar(requests["last"])
    assert bought["last"].estado == CONFIRMADA
    await before.stop(grace=0)
    await world.eventos_app.stop(grace=0)

    await as_c6109af_stored_it(world)
    await EARLIER_RUNS[earlier](world)
    await upgrade(world)

    # The events answer as they were left: the small one sold out, two seats free.
    evento = await world.get_evento(plain.id)
    assert (evento.entradas_disponibles, evento.aforo_total) == (0, 3)
    evento = await world.get_evento(seated.id)
    assert list(evento.asientos_disponibles) == ["A-2", "A-4"]
    assert await world.db("reservas")["idempotencia"].count_documents({}) == 0

    # A client's retry across the upgrade answers its purchase (even on a sold-out event), buying nothing.
    for name in ("plain", "seated", "last"):
        again = await world.reservar(requests[name])
        assert (again.id, again.estado) == (bought[name].id, CONFIRMADA), name
    reused = await world.fails(world.reservar(world.request(u1, plain.id, cantidad=1, key="k-plain")))
    assert reused.reason == "IDEMPOTENCY_KEY_REUSED"
    late = await world.fails(world.reservar(world.request(u1, plain.id, cantidad=1)))
    assert late.reason == "SOLD_OUT"
    assert len(await world.ledger(bought["plain"].id)) == 1  # one charge, still

    # A purchase made before the upgrade is cancelled: its tickets and seats come back, once.
    assert (await world.cancelar(bought["plain"].id)).estado == CANCELADA
    assert (await world.get_evento(plain.id)).entradas_disponibles == 2
    assert (await world.cancelar(bought["seated"].id)).estado == CANCELADA
    assert list((await world.get_evento(seated.id)).asientos_disponibles) == SEATS
    again = await world.get(bought["plain"].id)
    assert again.estado == CANCELADA and (await world.get_evento(plain.id)).entradas_disponibles == 2
    # The reservation cancelled before the upgrade can take nothing (its tombstone was carried over).
    released = await world.fails(
        world.eventos.ReservarEntradas(
            eventos_pb2.ReservarEntradasRequest(evento_id=plain.id, reserva_id=bought["cancelled"].id, cantidad=1)
        )
    )
    assert (released.code, released.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "RESERVA_RELEASED")

    # New purchases, of the tickets and seats given back.
    fresh = await world.reservar(world.request(u2, plain.id, cantidad=2))
    seats = await world.reservar(world.request(u1, seated.id, cantidad=2, asientos=["A-1", "A-4"]))
    assert (fresh.estado, seats.estado) == (CONFIRMADA, CONFIRMADA)
    assert (await world.get_evento(plain.id)).entradas_disponibles == 0
    assert list((await world.get_evento(seated.id)).asientos_disponibles) == ["A-2", "A-3"]
    assert await world.historial_compras(u1) == [seats.id]
    assert sorted(await world.historial_compras(u2)) == sorted([bought["last"].id, fresh.id])
    await world.check()  # the DESIGN.md invariants (again at teardown)
