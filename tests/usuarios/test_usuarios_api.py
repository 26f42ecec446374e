"""UsuariosService over a real gRPC channel against the session's SecantusDB: CRUD and its error contract."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import field_mask_pb2

from eventflow.usuarios.v1 import usuarios_pb2 as pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXISTS = grpc.StatusCode.ALREADY_EXISTS


async def all_usuarios(usuarios) -> list[pb.Usuario]:
    reply = await usuarios.ListUsuarios(pb.ListUsuariosRequest(page_size=500))
    assert not reply.next_page_token
    return list(reply.usuarios)


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


# --- create and get ------------------------------------------------------------------------------


async def test_create_assigns_an_id_normalizes_and_get_returns_it(usuarios, nuevo_usuario) -> None:
    sent = nuevo_usuario(
        tipo_documento=" pasaporte ", nro_documento="ab123c", nombre=" Ana ", apellido=" Pérez ",
        email=" Ana.Perez@Example.COM ", id="chosen-by-client", historial_compras=["r-forged"],
    )  # fmt: skip
    created = await usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=sent))
    assert created.id and created.id != "chosen-by-client"
    assert (created.tipo_documento, created.nro_documento) == ("PASAPORTE", "AB123C")
    assert (created.nombre, created.apellido, created.email) == ("Ana", "Pérez", "ana.perez@example.com")
    assert list(created.historial_compras) == []
    assert await usuarios.GetUsuario(pb.GetUsuarioRequest(id=created.id)) == created


async def test_created_ids_are_distinct(usuarios, nuevo_usuario) -> None:
    created = await asyncio.gather(
        *(usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=nuevo_usuario())) for _ in range(10))
    )
    assert len({u.id for u in created}) == 10


@pytest.mark.parametrize(
    "field,value",
    [
        ("tipo_documento", ""),
        ("tipo_documento", "RUT"),
        ("nro_documento", ""),
        ("nro_documento", "1" * 21),
        ("nro_documento", "1.234.567-8"),
        ("nombre", ""),
        ("nombre", "   "),
        ("nombre", "n" * 101),
        ("apellido", ""),
        ("apellido", "a" * 101),
        ("email", ""),
        ("email", "ana"),
        ("email", "ana@example"),
        ("email", "ana @example.com"),
        ("email", "a@b@example.com"),
        ("email", "@example.com"),
        ("email", "a" * 243 + "@example.com"),
    ],
)
async def test_create_validation(usuarios, nuevo_usuario, rpc_error, field: str, value: str) -> None:
    bad = nuevo_usuario(**{field: value})
    error = await rpc_error(usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=bad)), INVALID, "VALIDATION_FAILED", field)
    assert field in error.details()
    assert await all_usuarios(usuarios) == []


async def test_create_without_usuario(usuarios, rpc_error) -> None:
    await rpc_error(usuarios.CreateUsuario(pb.CreateUsuarioRequest()), INVALID, "VALIDATION_FAILED", "usuario")


async def test_limits_are_inclusive(usuarios, nuevo_usuario) -> None:
    email = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 58 + ".uy"
    assert len(email) == 254
    usuario = nuevo_usuario(nro_documento="9" * 20, nombre="n" * 100, apellido="a" * 100, email=email)
    created = await usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=usuario))
    assert (created.nro_documento, created.nombre, created.email) == ("9" * 20, "n" * 100, email)


@pytest.mark.parametrize("usuario_id", ["", "0" * 32, "not-an-id", "../../etc", "x" * 128, "x" * 5000, "{'$ne': 1}", "ñ€"])
async def test_get_unknown_or_malformed_id(usuarios, rpc_error, usuario_id: str) -> None:
    if 0 < len(usuario_id) <= 128:
        error = await rpc_error(usuarios.GetUsuario(pb.GetUsuarioRequest(id=usuario_id)), NOT_FOUND, "USUARIO_NOT_FOUND")
        assert "no usuario" in error.details()
    else:  # empty, or longer than any id (MAX_ID)
        error = await rpc_error(usuarios.GetUsuario(pb.GetUsuarioRequest(id=usuario_id)), INVALID, "VALIDATION_FAILED", "id")
        assert usuario_id[:100] not in error.details() or not usuario_id


# --- uniqueness ----------------------------------------------------------------------------------


async def test_email_taken_whatever_its_case(usuarios, nuevo_usuario, rpc_error) -> None:
    await usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=nuevo_usuario(email="dup@example.com")))
    error = await rpc_error(
        usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=nuevo_usuario(email="DUP@Example.com"))),
        EXISTS, "EMAIL_TAKEN", "email",
    )  # fmt: skip
    assert "email" in error.details() and "dup@example.com" in error.details()
    assert len(await all_usuarios(usuarios)) == 1


async def test_documento_taken_whatever_its_case(usuarios, nuevo_usuario, rpc_error) -> None:
    await usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=nuevo_usuario(tipo_documento="CI", nro_documento="ab1")))
    error = await rpc_error(
        usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=nuevo_usuario(tipo_documento="ci", nro_documento="AB1"))),
        EXISTS, "DOCUMENTO_TAKEN", "nro_documento",
    )  # fmt: skip
    assert "documento" in error.details() and "AB1" in error.details()
    # The same number with another kind of document is another document.
    await usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=nuevo_usuario(tipo_documento="DNI", nro_documento="AB1")))
    assert len(await all_usuarios(usuarios)) == 2


async def test_concurrent_creates_with_one_email_make_one_usuario(usuarios, nuevo_usuario) -> None:
    calls = [usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=nuevo_usuario(email="race@example.com"))) for _ in range(10)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    ok = [r for r in results if isinstance(r, pb.Usuario)]
    failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 1 and len(failed) == 9
    assert {e.code() for e in failed} == {EXISTS}
    assert [u.id for u in await all_usuarios(usuarios)] == [ok[0].id]


async def test_update_to_a_taken_email_or_documento(usuarios, nuevo_usuario, rpc_error) -> None:
    ana = await usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=nuevo_usuario(email="ana@example.com", nro_documento="111")))
    luis = await usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=nuevo_usuario(email="luis@example.com", nro_documento="222")))
    change = pb.Usuario(id=luis.id, email="ANA@example.com", tipo_documento="dni", nro_documento="111")
    await rpc_error(
        usuarios.UpdateUsuario(pb.UpdateUsuarioRequest(usuario=change, update_mask=mask("email"))),
        EXISTS, "EMAIL_TAKEN", "email",
    )  # fmt: skip
    await rpc_error(
        usuarios.UpdateUsuario(pb.UpdateUsuarioRequest(usuario=change, update_mask=mask("nro_documento"))),
        EXISTS, "DOCUMENTO_TAKEN", "nro_documento",
    )  # fmt: skip
    assert await usuarios.GetUsuario(pb.GetUsuarioRequest(id=luis.id)) == luis
    # Keeping one's own email and document is not a conflict.
    same = await usuarios.UpdateUsuario(pb.UpdateUsuarioRequest(usuario=ana))
    assert same == ana


# --- update --------------------------------------------------------------------------------------


async def test_update_with_a_mask_changes_only_the_named_fields(usuarios, nuevo_usuario) -> None:
    ana = await usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=nuevo_usuario()))
    change = pb.Usuario(id=ana.id, nombre=" Anita ", email="", apellido="ignored because not in the mask")
    updated = await usuarios.UpdateUsuario(pb.UpdateUsuarioRequest(usuario=change, update_mask=mask("nombre")))
    expected = pb.Usuario()
    expected.CopyFrom(ana)
    expected.nombre = "Anita"
    assert updated == expected
    assert await usuarios.GetUsuario(pb.GetUsuarioRequest(id=ana.id)) == expected


async def test_update_with_an_empty_mask_sets_every_updatable_field(usuarios, nuevo_usuario, rpc_error) -> None:
    ana = await usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=nuevo_usuario()))
    await usuarios.RegistrarCompra(pb.RegistrarCompraRequest(usuario_id=ana.id, reserva_id="r-1"))
    new = pb.Usuario(id=ana.id, tipo_documento="ci", nro_documento="x9", nombre="Eva", apellido="Gómez",
                     email="EVA@example.com", historial_compras=["ignored"])  # fmt: skip
    updated = await usuarios.UpdateUsuario(pb.UpdateUsuarioRequest(usuario=new))
    assert updated == pb.Usuario(id=ana.id, tipo_documento="CI", nro_documento="X9", nombre="Eva", apellido="Gómez",
                                 email="eva@example.com", historial_compras=["r-1"])  # fmt: skip
    # An empty mask means every field, so every field must be valid.
    partial = pb.Usuario(id=ana.id, nombre="Solo el nombre")
    await rpc_error(usuarios.UpdateUsuario(pb.UpdateUsuarioRequest(usuario=partial)), INVALID, "VALIDATION_FAILED", "tipo_documento")
    assert await usuarios.GetUsuario(pb.GetUsuarioRequest(id=ana.id)) == updated


@pytest.mark.parametrize("path", ["id", "historial_compras", "telefono", "usuario.nombre"])
async def test_update_mask_with_a_bad_path(usuarios, nuevo_usuario, rpc_error, path: str) -> None:
    ana = await usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=nuevo_usuario()))
    change = pb.Usuario(id=ana.id, nombre="Eva")
    error = await rpc_error(
        usuarios.UpdateUsuario(pb.UpdateUsuarioRequest(usuario=change, update_mask=mask("nombre", path))),
        INVALID, "INVALID_UPDATE_MASK", "update_mask",
    )  # fmt: skip
    assert path in error.details()
    assert await usuarios.GetUsuario(pb.GetUsuarioRequest(id=ana.id)) == ana


async def test_update_validates_the_masked_fields(usuarios, nuevo_usuario, rpc_error) -> None:
    ana = await usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=nuevo_usuario()))
    for field, value in [("email", "no-es-un-email"), ("tipo_documento", "LIBRETA"), ("apellido", "")]:
        change = pb.Usuario(id=ana.id, **{field: value})
        await rpc_error(
            usuarios.UpdateUsuario(pb.UpdateUsuarioRequest(usuario=change, update_mask=mask(field))),
            INVALID, "VALIDATION_FAILED", field,
        )  # fmt: skip
    assert await usuarios.GetUsuario(pb.GetUsuarioRequest(id=ana.id)) == ana


async def test_update_unknown_or_missing_id(usuarios, nuevo_usuario, rpc_error) -> None:
    change = nuevo_usuario(id="0" * 32)
    await rpc_error(usuarios.UpdateUsuario(pb.UpdateUsuarioRequest(usuario=change)), NOT_FOUND, "USUARIO_NOT_FOUND")
    await rpc_error(
        usuarios.UpdateUsuario(pb.UpdateUsuarioRequest(usuario=nuevo_usuario())), INVALID, "VALIDATION_FAILED", "usuario.id"
    )
    await rpc_error(usuarios.UpdateUsuario(pb.UpdateUsuarioRequest()), INVALID, "VALIDATION_FAILED", "usuario")


# --- delete --------------------------------------------------------------------------------------


async def test_delete_without_purchases(usuarios, nuevo_usuario, rpc_error) -> None:
    ana = await usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=nuevo_usuario()))
    await usuarios.DeleteUsuario(pb.DeleteUsuarioRequest(id=ana.id))
    await rpc_error(usuarios.GetUsuario(pb.GetUsuarioRequest(id=ana.id)), NOT_FOUND, "USUARIO_NOT_FOUND")
    await rpc_error(usuarios.DeleteUsuario(pb.DeleteUsuarioRequest(id=ana.id)), NOT_FOUND, "USUARIO_NOT_FOUND")
    await rpc_error(usuarios.DeleteUsuario(pb.DeleteUsuarioRequest(id="")), INVALID, "VALIDATION_FAILED", "id")
    # Its email and document are free again.
    again = await usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=ana))
    assert again.id != ana.id


async def test_delete_with_purchases_is_refused_until_they_are_annulled(usuarios, nuevo_usuario, rpc_error) -> None:
    ana = await usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=nuevo_usuario()))
    await usuarios.RegistrarCompra(pb.RegistrarCompraRequest(usuario_id=ana.id, reserva_id="r-1"))
    with_purchase = await usuarios.GetUsuario(pb.GetUsuarioRequest(id=ana.id))
    error = await rpc_error(
        usuarios.DeleteUsuario(pb.DeleteUsuarioRequest(id=ana.id)), grpc.StatusCode.FAILED_PRECONDITION, "HAS_PURCHASES"
    )
    assert "purchase" in error.details()
    assert await usuarios.GetUsuario(pb.GetUsuarioRequest(id=ana.id)) == with_purchase
    await usuarios.AnularCompra(pb.AnularCompraRequest(usuario_id=ana.id, reserva_id="r-1"))
    await usuarios.DeleteUsuario(pb.DeleteUsuarioRequest(id=ana.id))
    assert await all_usuarios(usuarios) == []


async def test_delete_racing_registrar_compra_never_loses_a_purchase(usuarios, nuevo_usuario) -> None:
    """Either the delete wins (the purchase is NOT_FOUND) or the purchase wins (the delete is refused): never both."""
    outcomes = set()
    for round_ in range(10):
        ana = await usuarios.CreateUsuario(pb.CreateUsuarioRequest(usuario=nuevo_usuario()))
        deleted, registered = await asyncio.gather(
            usuarios.DeleteUsuario(pb.DeleteUsuarioRequest(id=ana.id)),
            usuarios.RegistrarCompra(pb.RegistrarCompraRequest(usuario_id=ana.id, reserva_id=f"r-{round_}")),
            return_exceptions=True,
        )
        if isinstance(registered, pb.RegistrarCompraResponse):
            assert isinstance(deleted, grpc.aio.AioRpcError), "a recorded purchase was deleted with its usuario"
            assert deleted.code() == grpc.StatusCode.FAILED_PRECONDITION
            stored = await usuarios.GetUsuario(pb.GetUsuarioRequest(id=ana.id))
            assert list(stored.historial_compras) == [f"r-{round_}"]
            outcomes.add("purchase first")
        else:
            assert isinstance(registered, grpc.aio.AioRpcError) and registered.code() == NOT_FOUND
            assert not isinstance(deleted, BaseException)
            outcomes.add("delete first")
    assert outcomes  # which orders occur depends on scheduling; every one of them was checked


async def test_a_megabyte_id_gets_the_status_it_deserves_not_resource_exhausted(usuarios) -> None:
    """Issue 8's attack: a 1 MB id echoed whole into the error's trailers made the client see RESOURCE_EXHAUSTED."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await usuarios.GetUsuario(pb.GetUsuarioRequest(id="x" * 1_000_000))
    assert caught.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), caught.value.details()
    assert len(caught.value.details()) < 1_000
