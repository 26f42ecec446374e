"""Who may call what, against the three real services: the role matrix, and the attacks of issue 8.

The matrix walks the services' own descriptors, so an RPC added without a rule in infra/access.py fails here:
the table must name every RPC, and every RPC answers each identity as the table says.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import grpc
import jwt
import pytest
from conftest import CANCELADA, CONFIRMADA, World
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import field_mask_pb2, message_factory

from callers import ADMIN, KEYS, SERVICIO, cliente, open_channel
from eventflow.eventos.v1 import eventos_pb2, eventos_pb2_grpc
from eventflow.reservas.v1 import reservas_pb2, reservas_pb2_grpc
from eventflow.usuarios.v1 import usuarios_pb2, usuarios_pb2_grpc
from infra.access import RULES, Access
from infra.auth import AUDIENCE, ISSUER, Principal, Role
from infra.errors import PermissionDenied, error_info
from infra.keys import load_private_key

SERVICES = [usuarios_pb2.DESCRIPTOR.services_by_name["UsuariosService"],
            eventos_pb2.DESCRIPTOR.services_by_name["EventosService"],
            reservas_pb2.DESCRIPTOR.services_by_name["ReservasService"]]  # fmt: skip
DENIED, UNAUTHENTICATED = grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED


def methods() -> Iterator[tuple[str, Any]]:
    for service in SERVICES:
        for method in service.methods:
            yield f"/{service.full_name}/{method.name}", method


def test_the_table_names_every_rpc_and_nothing_else() -> None:
    declared = {name for name, _ in methods()}
    assert declared - set(RULES) == set(), "RPCs without an access rule (nobody may call them until they get one)"
    assert set(RULES) - declared == set(), "rules for RPCs that do not exist"


async def test_an_rpc_the_table_does_not_name_is_denied_to_everyone() -> None:
    access = Access()
    for principal in (Principal("a", Role.ADMIN), Principal("s", Role.SERVICIO), Principal("c", Role.CLIENTE, "u1")):
        with pytest.raises(PermissionDenied) as caught:
            await access("/eventflow.eventos.v1.EventosService/DropEverything", principal, None)
        assert caught.value.reason == "RPC_NOT_ALLOWED"


def _forged(role: Role = Role.ADMIN) -> str:
    """Well-formed, right claims and kid, signed by a key this deployment never made."""
    now = int(time.time())
    claims = {"sub": "mallory", "role": role.value, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600}
    return jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": "issuer"})


def _expired() -> str:
    return _signed_with_issuer(exp_offset=-3600)


def _signed_with_issuer(exp_offset: int = 600, **changes: Any) -> str:
    now = int(time.time())
    claims = {"sub": "x", "role": "admin", "iss": ISSUER, "aud": AUDIENCE, "iat": now - 7200, "exp": now + exp_offset}
    claims.update(changes)
    key = load_private_key(KEYS.issuer_private.read_bytes(), "issuer.key")
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "issuer"})


def _request(method: Any, own: str, reserva_id: str) -> Any:
    """An almost empty request of the method's type, with the fields the rule checks set to the cliente's own."""
    request = message_factory.GetMessageClass(method.input_type)()
    rule = RULES[f"/{method.containing_service.full_name}/{method.name}"]
    for path, value in ((rule.own, own), (rule.owned, reserva_id)):
        if path:
            holder = request
            *parents, name = path.split(".")
            for part in parents:
                holder = getattr(holder, part)
            setattr(holder, name, value)
    return request


async def _call(address: str, name: str, method: Any, request: Any, token_value: str | None) -> grpc.StatusCode:
    response_class = message_factory.GetMessageClass(method.output_type)
    metadata = (("authorization", f"Bearer {token_value}"),) if token_value is not None else ()
    async with grpc.aio.insecure_channel(address) as channel:
        rpc = channel.unary_unary(name, request_serializer=lambda m: m.SerializeToString(),
                                  response_deserializer=response_class.FromString)  # fmt: skip
        try:
            await rpc(request, metadata=metadata, timeout=20)
        except grpc.aio.AioRpcError as error:
            if error.code() in (DENIED, UNAUTHENTICATED):
                info = error_info(error)
                assert info is not None and info.reason, f"{name}: {error.code().name} without an ErrorInfo reason"
            return error.code()
    return grpc.StatusCode.OK


async def test_role_matrix_every_rpc_with_every_identity(stack: World) -> None:
    mine = await stack.usuario()
    evento = await stack.evento(aforo=5)
    reserva = await stack.reservar(stack.request(mine, evento.id))
    assert reserva.estado == CONFIRMADA
    addresses = {"UsuariosService": stack.usuarios_address, "EventosService": stack.eventos_address,
                 "ReservasService": stack.reservas_address}  # fmt: skip
    identities = {Role.ADMIN: ADMIN, Role.CLIENTE: cliente(mine), Role.SERVICIO: SERVICIO}
    anonymous = {"no token": None, "expired": _expired(), "forged": _forged(), "not a JWT": "abc.def",
                 "wrong audience": _signed_with_issuer(aud="someone-else"),
                 "wrong issuer": _signed_with_issuer(iss="someone-else")}  # fmt: skip
    seen: list[str] = []
    for name, method in methods():
        address = addresses[method.containing_service.name]
        rule = RULES[name]
        for role, value in identities.items():
            code = await _call(address, name, method, _request(method, mine, reserva.id), value)
            if role in rule.roles:
                assert code not in (DENIED, UNAUTHENTICATED), f"{role} is allowed {name} but got {code.name}"
            else:
                assert code == DENIED, f"{role} may not call {name} but got {code.name}"
        for what, value in anonymous.items():
            code = await _call(address, name, method, _request(method, mine, reserva.id), value)
            assert code == UNAUTHENTICATED, f"{name} with {what}: {code.name}"
        seen.append(name)
    assert len(seen) == len(RULES)


async def test_health_and_reflection_need_no_token(stack: World) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: PLC0415
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc  # noqa: PLC0415

    async with grpc.aio.insecure_channel(stack.reservas_address) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = [s.name async for reply in stream for s in reply.list_services_response.service]
        assert "eventflow.reservas.v1.ReservasService" in names


# -- the attacks of issue 8, each one refused ---------------------------------------------------------


def _stubs(world: World, token_value: str) -> tuple[Any, Any, Any]:
    channels = [open_channel(a, token_value) for a in (world.usuarios_address, world.eventos_address,
                                                        world.reservas_address)]  # fmt: skip
    world.channels.extend(channels)
    return (usuarios_pb2_grpc.UsuariosServiceStub(channels[0]), eventos_pb2_grpc.EventosServiceStub(channels[1]),
            reservas_pb2_grpc.ReservasServiceStub(channels[2]))  # fmt: skip


async def test_nobody_but_reservas_can_give_tickets_back_so_nothing_oversells(stack: World) -> None:
    buyer, second = await stack.usuario(), await stack.usuario()
    evento = await stack.evento(aforo=2)
    reserva = await stack.reservar(stack.request(buyer, evento.id, cantidad=2))
    assert reserva.estado == CONFIRMADA
    liberar = eventos_pb2.LiberarEntradasRequest(evento_id=evento.id, reserva_id=reserva.id)
    for token_value in (ADMIN, cliente(buyer), cliente(second)):
        _, eventos, _ = _stubs(stack, token_value)
        failure = await stack.fails(eventos.LiberarEntradas(liberar, timeout=10))
        assert (failure.code, failure.reason) == (DENIED, "ROLE_NOT_ALLOWED")
    assert (await stack.get_evento(evento.id)).entradas_disponibles == 0
    failure = await stack.fails(stack.reservar(stack.request(second, evento.id, cantidad=2)))
    assert failure.reason == "SOLD_OUT"


async def test_nobody_but_reservas_can_take_tickets(stack: World) -> None:
    buyer = await stack.usuario()
    evento = await stack.evento(aforo=10)
    drain = eventos_pb2.ReservarEntradasRequest(evento_id=evento.id, reserva_id="drain-1", cantidad=10)
    for token_value in (ADMIN, cliente(buyer)):
        _, eventos, _ = _stubs(stack, token_value)
        failure = await stack.fails(eventos.ReservarEntradas(drain, timeout=10))
        assert failure.code == DENIED
    assert (await stack.get_evento(evento.id)).entradas_disponibles == 10


async def test_nobody_but_reservas_can_write_a_purchase_history(stack: World) -> None:
    buyer, victim = await stack.usuario(), await stack.usuario()
    evento = await stack.evento(aforo=5)
    real = await stack.reservar(stack.request(victim, evento.id))
    for token_value in (ADMIN, cliente(buyer), cliente(victim)):
        usuarios, _, _ = _stubs(stack, token_value)
        fake = usuarios_pb2.RegistrarCompraRequest(usuario_id=victim, reserva_id="fake-purchase")
        assert (await stack.fails(usuarios.RegistrarCompra(fake, timeout=10))).code == DENIED
        anular = usuarios_pb2.AnularCompraRequest(usuario_id=victim, reserva_id=real.id)
        assert (await stack.fails(usuarios.AnularCompra(anular, timeout=10))).code == DENIED
    assert await stack.historial_compras(victim) == [real.id]


async def test_a_cliente_cannot_cancel_or_read_another_users_reservation(stack: World) -> None:
    mallory, victim = await stack.usuario(), await stack.usuario()
    evento = await stack.evento(aforo=5)
    theirs = await stack.reservar(stack.request(victim, evento.id))
    _, _, reservas = _stubs(stack, cliente(mallory))
    denied = []
    for call in (
        reservas.CancelarReserva(reservas_pb2.CancelarReservaRequest(id=theirs.id), timeout=10),
        reservas.GetReserva(reservas_pb2.GetReservaRequest(id=theirs.id), timeout=10),
        reservas.GetHistorialReserva(reservas_pb2.GetHistorialReservaRequest(reserva_id=theirs.id), timeout=10),
    ):
        failure = await stack.fails(call)
        assert (failure.code, failure.reason) == (DENIED, "NOT_OWNER")
        denied.append(failure)
    assert (await stack.get(theirs.id)).estado == CONFIRMADA
    assert await stack.ledger(theirs.id) == ["CARGO"]
    # Someone else's reservation and one that does not exist get the very same answer: no existence oracle.
    missing = await stack.fails(reservas.GetReserva(reservas_pb2.GetReservaRequest(id="no-such-reserva"), timeout=10))
    assert (missing.code, missing.reason, missing.details) == (denied[1].code, denied[1].reason, denied[1].details)
    # Its own reservation, it may cancel: the refund path is open to the buyer.
    _, _, own = _stubs(stack, cliente(victim))
    cancelled = await own.CancelarReserva(reservas_pb2.CancelarReservaRequest(id=theirs.id), timeout=30)
    assert cancelled.estado == CANCELADA


async def test_a_cliente_cannot_change_or_list_other_users(stack: World) -> None:
    mallory, victim = await stack.usuario(), await stack.usuario()
    usuarios, _, _ = _stubs(stack, cliente(mallory))
    update = usuarios_pb2.UpdateUsuarioRequest(
        usuario=usuarios_pb2.Usuario(id=victim, email="mallory@example.com"),
        update_mask=field_mask_pb2.FieldMask(paths=["email"]),
    )
    assert (await stack.fails(usuarios.UpdateUsuario(update, timeout=10))).reason == "NOT_OWNER"
    assert (await stack.fails(usuarios.ListUsuarios(usuarios_pb2.ListUsuariosRequest(), timeout=10))).code == DENIED
    assert (await stack.fails(usuarios.GetUsuario(usuarios_pb2.GetUsuarioRequest(id=victim), timeout=10))).code == DENIED
    victim_now = await stack.usuarios.GetUsuario(usuarios_pb2.GetUsuarioRequest(id=victim), timeout=10)
    assert victim_now.email != "mallory@example.com"
    # Its own profile it may read and change.
    update.usuario.id = mallory
    assert (await usuarios.UpdateUsuario(update, timeout=10)).email == "mallory@example.com"


async def test_a_cliente_lists_and_buys_only_as_itself(stack: World) -> None:
    mine, other = await stack.usuario(), await stack.usuario()
    evento = await stack.evento(aforo=5)
    theirs = await stack.reservar(stack.request(other, evento.id))
    _, eventos, reservas = _stubs(stack, cliente(mine))
    failure = await stack.fails(reservas.Reservar(stack.request(other, evento.id), timeout=30))
    assert (failure.code, failure.reason) == (DENIED, "NOT_OWNER")
    # Without a usuario_id, a cliente buys as itself; a list without a filter is its own reservations.
    own = await reservas.Reservar(stack.request("", evento.id), timeout=30)
    assert (own.usuario_id, own.estado) == (mine, CONFIRMADA)
    deadline = time.monotonic() + 30
    while True:  # the list is a read model: wait until the projector has seen the purchase
        listed = await reservas.ListReservas(reservas_pb2.ListReservasRequest(), timeout=10)
        if own.id in {r.id for r in listed.reservas} or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert own.id in {r.id for r in listed.reservas}
    assert theirs.id not in {r.id for r in listed.reservas}
    assert all(r.usuario_id == mine for r in listed.reservas)
    filtered = await stack.fails(reservas.ListReservas(reservas_pb2.ListReservasRequest(usuario_id=other), timeout=10))
    assert filtered.code == DENIED
    # Events it may read, not create, change or delete; statistics are the organiser's.
    assert (await eventos.GetEvento(eventos_pb2.GetEventoRequest(id=evento.id), timeout=10)).id == evento.id
    create = eventos_pb2.CreateEventoRequest(evento=eventos_pb2.Evento(nombre="x", aforo_total=50000))
    assert (await stack.fails(eventos.CreateEvento(create, timeout=10))).code == DENIED
    delete = eventos_pb2.DeleteEventoRequest(id=evento.id)
    assert (await stack.fails(eventos.DeleteEvento(delete, timeout=10))).code == DENIED
    stats = reservas_pb2.GetEstadisticasEventoRequest(evento_id=evento.id)
    assert (await stack.fails(reservas.GetEstadisticasEvento(stats, timeout=10))).code == DENIED
