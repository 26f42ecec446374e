"""ListUsuarios pagination and the purchase history RPCs (RegistrarCompra, AnularCompra), over a real channel."""

from __future__ import annotations

import asyncio

import grpc

from eventflow.usuarios.v1 import usuarios_pb2 as pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


async def create_many(usuarios, nuevo_usuario, count: int, concurrency: int = 1) -> list[pb.Usuario]:
    """`count` usuarios; with concurrency 1 they are created one after another (so their order is known)."""
    gate = asyncio.Semaphore(concurrency)

    async def create() -> pb.Usuario:
        async with gate:
            return await usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=nuevo_usuario()))

    if concurrency == 1:
        return [await create() for _ in range(count)]
    return list(await asyncio.gather(*(create() for _ in range(count))))


async def walk(usuarios, page_size: int) -> tuple[list[pb.Usuario], list[int]]:
    """Every usuario, page by page, and the size of each page."""
    seen: list[pb.Usuario] = []
    sizes: list[int] = []
    token = ""
    while True:
        reply = await usuarios.ListUsuarios(pb.ListUsuariosRequest(page_size=page_size, page_token=token))
        seen.extend(reply.usuarios)
        sizes.append(len(reply.usuarios))
        token = reply.next_page_token
        if not token:
            return seen, sizes


# --- ListUsuarios --------------------------------------------------------------------------------


async def test_empty_list(usuarios) -> None:
    reply = await usuarios.ListUsuarios(pb.ListUsuariosRequest())
    assert list(reply.usuarios) == [] and reply.next_page_token == ""


async def test_walking_every_page_oldest_first_with_no_gap_or_overlap(usuarios, nuevo_usuario) -> None:
    created = await create_many(usuarios, nuevo_usuario, 23)
    seen, sizes = await walk(usuarios, page_size=5)
    assert [u.id for u in seen] == [u.id for u in created]
    assert seen == created
    assert sizes == [5, 5, 5, 5, 3]
    # A count that divides evenly ends on a full page, with no empty page after it.
    _, sizes = await walk(usuarios, page_size=23)
    assert sizes == [23]


async def test_pages_stay_consistent_while_usuarios_are_added_and_deleted(usuarios, nuevo_usuario) -> None:
    created = await create_many(usuarios, nuevo_usuario, 12)
    first = await usuarios.ListUsuarios(pb.ListUsuariosRequest(page_size=4))
    assert [u.id for u in first.usuarios] == [u.id for u in created[:4]]
    await usuarios.DeleteUsuario(pb.DeleteUsuarioRequest(id=created[1].id))  # already seen
    await usuarios.DeleteUsuario(pb.DeleteUsuarioRequest(id=created[6].id))  # not yet seen
    newer = await usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=nuevo_usuario()))
    rest: list[pb.Usuario] = []
    token = first.next_page_token
    while token:
        reply = await usuarios.ListUsuarios(pb.ListUsuariosRequest(page_size=4, page_token=token))
        rest.extend(reply.usuarios)
        token = reply.next_page_token
    expected = [u.id for u in created[4:] if u.id != created[6].id] + [newer.id]
    assert [u.id for u in rest] == expected


async def test_page_size_default_and_cap(usuarios, nuevo_usuario) -> None:
    created = await create_many(usuarios, nuevo_usuario, 501, concurrency=25)
    default = await usuarios.ListUsuarios(pb.ListUsuariosRequest(page_size=0))
    assert len(default.usuarios) == 50 and default.next_page_token
    capped = await usuarios.ListUsuarios(pb.ListUsuariosRequest(page_size=100_000))
    assert len(capped.usuarios) == 500 and capped.next_page_token
    last = await usuarios.ListUsuarios(pb.ListUsuariosRequest(page_size=100_000, page_token=capped.next_page_token))
    assert len(last.usuarios) == 1 and last.next_page_token == ""
    assert {u.id for u in [*capped.usuarios, *last.usuarios]} == {u.id for u in created}
    # The default page is the start of the same order.
    assert list(default.usuarios) == list(capped.usuarios[:50])


async def test_negative_page_size(usuarios, rpc_error) -> None:
    error = await rpc_error(
        usuarios.ListUsuarios(pb.ListUsuariosRequest(page_size=-1)), INVALID, "VALIDATION_FAILED", "page_size"
    )
    assert "page_size" in error.details()


async def test_forged_page_tokens(usuarios, nuevo_usuario, rpc_error) -> None:
    await create_many(usuarios, nuevo_usuario, 3)
    real = (await usuarios.ListUsuarios(pb.ListUsuariosRequest(page_size=1))).next_page_token
    body, mac = real.rsplit(".", 1)
    forged = [
        "garbage",
        "eyJpZCI6IngiLCJvcmRlbiI6MH0",  # a well-formed position with no signature
        body + "." + "0" * len(mac),
        body[:-2] + "." + mac,
        real + "x",
    ]
    for token in forged:
        await rpc_error(
            usuarios.ListUsuarios(pb.ListUsuariosRequest(page_size=1, page_token=token)),
            INVALID, "INVALID_PAGE_TOKEN", "page_token",
        )  # fmt: skip
    # The real token still works, with any page size.
    reply = await usuarios.ListUsuarios(pb.ListUsuariosRequest(page_size=10, page_token=real))
    assert len(reply.usuarios) == 2


# --- RegistrarCompra / AnularCompra --------------------------------------------------------------


async def test_registrar_compra_twice_keeps_one_entry_in_order(usuarios, nuevo_usuario) -> None:
    ana = await usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=nuevo_usuario()))
    added = []
    for reserva_id in ["r-1", "r-2", "r-1", "r-3", "r-2"]:
        reply = await usuarios.RegistrarCompra(pb.RegistrarCompraRequest(usuario_id=ana.id, reserva_id=reserva_id))
        assert (reply.usuario_id, reply.reserva_id) == (ana.id, reserva_id)
        added.append(reply.registrada)
    assert added == [True, True, False, True, False]  # a repeat says it was already there
    stored = await usuarios.GetUsuario(pb.GetUsuarioRequest(id=ana.id))
    assert list(stored.historial_compras) == ["r-1", "r-2", "r-3"]
    assert (stored.nombre, stored.email) == (ana.nombre, ana.email)


async def test_concurrent_retries_of_one_compra_keep_one_entry(usuarios, nuevo_usuario) -> None:
    ana = await usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=nuevo_usuario()))
    request = pb.RegistrarCompraRequest(usuario_id=ana.id, reserva_id="r-same")
    replies = await asyncio.gather(*(usuarios.RegistrarCompra(request) for _ in range(20)))
    assert sum(r.registrada for r in replies) == 1  # exactly one of the racing retries added it
    stored = await usuarios.GetUsuario(pb.GetUsuarioRequest(id=ana.id))
    assert list(stored.historial_compras) == ["r-same"]


async def test_concurrent_distinct_compras_are_all_kept(usuarios, nuevo_usuario) -> None:
    ana = await usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=nuevo_usuario()))
    ids = [f"r-{i}" for i in range(20)]
    await asyncio.gather(
        *(usuarios.RegistrarCompra(pb.RegistrarCompraRequest(usuario_id=ana.id, reserva_id=r)) for r in ids * 2)
    )
    stored = await usuarios.GetUsuario(pb.GetUsuarioRequest(id=ana.id))
    assert sorted(stored.historial_compras) == sorted(ids)


async def test_anular_compra_twice_and_absent(usuarios, nuevo_usuario) -> None:
    ana = await usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=nuevo_usuario()))
    for reserva_id in ["r-1", "r-2"]:
        await usuarios.RegistrarCompra(pb.RegistrarCompraRequest(usuario_id=ana.id, reserva_id=reserva_id))
    first = await usuarios.AnularCompra(pb.AnularCompraRequest(usuario_id=ana.id, reserva_id="r-1"))
    second = await usuarios.AnularCompra(pb.AnularCompraRequest(usuario_id=ana.id, reserva_id="r-1"))
    never = await usuarios.AnularCompra(pb.AnularCompraRequest(usuario_id=ana.id, reserva_id="r-never"))
    assert (first.anulada, second.anulada, never.anulada) == (True, False, False)
    assert list((await usuarios.GetUsuario(pb.GetUsuarioRequest(id=ana.id))).historial_compras) == ["r-2"]



async def test_a_purchase_annulled_is_never_recorded_again(usuarios, nuevo_usuario, rpc_error) -> None:
    """A saga's RegistrarCompra can arrive late: sent by a reservas replica that then lost the saga (killed, or
    its lease lapsed) and reaching usuarios after the replica that took the saga over undid it. The annulled
    purchase must not come back: its reservation is FALLIDA or CANCELADA. (Even when the late write comes
    before anything was recorded: the taker annuls what may have been done.)"""
    ana = await usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=nuevo_usuario()))
    await usuarios.RegistrarCompra(pb.RegistrarCompraRequest(usuario_id=ana.id, reserva_id="r-1"))
    await usuarios.AnularCompra(pb.AnularCompraRequest(usuario_id=ana.id, reserva_id="r-1"))
    await usuarios.AnularCompra(pb.AnularCompraRequest(usuario_id=ana.id, reserva_id="r-late"))  # before it
    for reserva_id in ("r-1", "r-late"):
        await rpc_error(
            usuarios.RegistrarCompra(pb.RegistrarCompraRequest(usuario_id=ana.id, reserva_id=reserva_id)),
            grpc.StatusCode.FAILED_PRECONDITION, "PURCHASE_ANNULLED",
        )  # fmt: skip
    await usuarios.RegistrarCompra(pb.RegistrarCompraRequest(usuario_id=ana.id, reserva_id="r-2"))
    assert list((await usuarios.GetUsuario(pb.GetUsuarioRequest(id=ana.id))).historial_compras) == ["r-2"]


async def test_compras_errors(usuarios, nuevo_usuario, rpc_error) -> None:
    ana = await usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=nuevo_usuario()))
    for rpc, request in [(usuarios.RegistrarCompra, pb.RegistrarCompraRequest), (usuarios.AnularCompra, pb.AnularCompraRequest)]:
        await rpc_error(rpc(request(usuario_id="", reserva_id="r-1")), INVALID, "VALIDATION_FAILED", "usuario_id")
        await rpc_error(rpc(request(usuario_id=ana.id, reserva_id="")), INVALID, "VALIDATION_FAILED", "reserva_id")
        await rpc_error(rpc(request(usuario_id=ana.id, reserva_id=" ")), INVALID, "VALIDATION_FAILED", "reserva_id")
        await rpc_error(rpc(request(usuario_id="0" * 32, reserva_id="r-1")), NOT_FOUND, "USUARIO_NOT_FOUND")
    stored = await usuarios.GetUsuario(pb.GetUsuarioRequest(id=ana.id))
    assert list(stored.historial_compras) == []
