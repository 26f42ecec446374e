"""The purchase saga over mutual TLS: real usuarios, eventos and reservas servers with `eventflow certs` files.

usuarios and eventos require a client certificate of the deployment's CA; reservas presents its own when it
calls them and requires none from its buyers. The DESIGN.md invariants are checked after every test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from callers import AUTH, PAGE_TOKEN_KEY, open_channel
from conftest import CONFIRMADA, World
from pymongo import AsyncMongoClient

from eventflow.eventos.v1 import eventos_pb2_grpc
from eventflow.reservas.v1 import reservas_pb2_grpc
from eventflow.usuarios.v1 import usuarios_pb2, usuarios_pb2_grpc
from eventos.config import Config as EventosConfig
from eventos.server import create_app as create_eventos
from infra import certs, tls
from infra.server import GrpcApp
from reservas.server import create_app as create_reservas
from usuarios.config import Config as UsuariosConfig
from usuarios.server import create_app as create_usuarios


def service_tls(directory: Path, service: str, client_from: Path | None = None) -> tls.TLSConfig:
    """A service's TLS as `eventflow up --tls` gives it; reservas presents the client certificate of `client_from`."""
    own = certs.files(directory, service)
    if service != "reservas":
        return tls.load(cert_file=own.cert, key_file=own.key, ca_file=directory / "ca.pem", require_client_cert=True)
    client = certs.files(client_from or directory, certs.RESERVAS_CLIENT)
    return tls.load(
        cert_file=own.cert, key_file=own.key, ca_file=directory / "ca.pem",
        client_cert_file=client.cert, client_key_file=client.key, calls_out=True,
    )  # fmt: skip


def operator(directory: Path, ca_from: Path) -> tls.ClientTLS:
    own = certs.files(directory, certs.OPERATOR)
    return tls.client_from_files(ca_from / "ca.pem", own.cert, own.key)


def buyer(directory: Path) -> tls.ClientTLS:
    return tls.client_from_files(directory / "ca.pem")


async def _ready(app: GrpcApp) -> GrpcApp:
    return app


@pytest.fixture
async def tls_stack(
    start_app: Callable[..., Awaitable[str]],
    mongo_uri: str,
    redis_url: str,
    db_name: Callable[[str], str],
    tls_certs: Path,
) -> AsyncIterator[World]:
    """usuarios, eventos and reservas in-process under mutual TLS; the stubs of usuarios and eventos present the
    operator's certificate, the stub of reservas only trusts the CA, as a buyer's client does."""
    dbs = {service: db_name(service) for service in ("usuarios", "eventos", "reservas")}
    admin = operator(tls_certs, tls_certs)
    usuarios_app = await create_usuarios(
        UsuariosConfig(auth=AUTH, page_token_key=PAGE_TOKEN_KEY, port=0, bind_host="127.0.0.1", mongodb_uri=mongo_uri, mongodb_database=dbs["usuarios"],
                       tls=service_tls(tls_certs, "usuarios"))
    )  # fmt: skip
    usuarios_address = await start_app(_ready(usuarios_app), admin)
    eventos_app = await create_eventos(
        EventosConfig(auth=AUTH, page_token_key=PAGE_TOKEN_KEY, port=0, bind_host="127.0.0.1", mongodb_uri=mongo_uri, mongodb_database=dbs["eventos"],
                      tls=service_tls(tls_certs, "eventos"))
    )  # fmt: skip
    eventos_address = await start_app(_ready(eventos_app), admin)
    channels = [open_channel(usuarios_address, client_tls=admin), open_channel(eventos_address, client_tls=admin)]
    mongo: AsyncMongoClient = AsyncMongoClient(mongo_uri, tz_aware=True)
    world = World(
        mongo=mongo, mongo_uri=mongo_uri, redis_url=redis_url, dbs=dbs,
        usuarios_address=usuarios_address, eventos_address=eventos_address,
        usuarios=usuarios_pb2_grpc.UsuariosServiceStub(channels[0]),
        eventos=eventos_pb2_grpc.EventosServiceStub(channels[1]),
        eventos_app=eventos_app, usuarios_app=usuarios_app, start_app=start_app, channels=channels,
    )  # fmt: skip
    world.reservas_address = await start_app(
        create_reservas(world.reservas_config(tls=service_tls(tls_certs, "reservas"))), buyer(tls_certs)
    )
    channels.append(open_channel(world.reservas_address, client_tls=buyer(tls_certs)))
    world.reservas = reservas_pb2_grpc.ReservasServiceStub(channels[-1])
    try:
        yield world
        await world.check()
    finally:
        for channel in channels:
            await channel.close()
        await mongo.close()


async def test_a_purchase_runs_end_to_end_over_mutual_tls(tls_stack: World) -> None:
    usuario, evento = await tls_stack.usuario(), await tls_stack.evento(aforo=5)
    reserva = await tls_stack.reservar(tls_stack.request(usuario, evento.id, cantidad=2))
    assert reserva.estado == CONFIRMADA
    assert (await tls_stack.get_evento(evento.id)).entradas_disponibles == 3
    assert await tls_stack.historial_compras(usuario) == [reserva.id]


async def test_usuarios_and_eventos_refuse_callers_without_a_certificate_of_the_deployment(
    tls_stack: World, tls_certs: Path, stranger_certs: Path
) -> None:
    request = usuarios_pb2.ListUsuariosRequest(page_size=1)
    for address in (tls_stack.usuarios_address, tls_stack.eventos_address):
        for client in (None, buyer(tls_certs), operator(stranger_certs, tls_certs)):
            async with open_channel(address, client_tls=client) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    # Any method: the handshake fails before a request is read.
                    await usuarios_pb2_grpc.UsuariosServiceStub(channel).ListUsuarios(request, timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, (address, client, caught.value.details())


async def test_a_reservas_whose_certificate_another_ca_signed_cannot_sell(
    tls_stack: World, tls_certs: Path, stranger_certs: Path
) -> None:
    """Its calls to usuarios and eventos are refused: nothing is sold, and the buyer is told to try again."""
    impostor_tls = service_tls(tls_certs, "reservas", client_from=stranger_certs)
    address = await tls_stack.start_app(
        create_reservas(tls_stack.reservas_config(tls=impostor_tls, call_timeout_seconds=2.0)), buyer(tls_certs)
    )
    async with open_channel(address, client_tls=buyer(tls_certs)) as channel:
        impostor = reservas_pb2_grpc.ReservasServiceStub(channel)
        usuario, evento = await tls_stack.usuario(), await tls_stack.evento(aforo=5)
        failure = await tls_stack.fails(impostor.Reservar(tls_stack.request(usuario, evento.id), timeout=30))
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAVAILABLE, "DEPENDENCY_UNAVAILABLE"), failure
    assert (await tls_stack.get_evento(evento.id)).entradas_disponibles == 5
    assert await tls_stack.historial_compras(usuario) == []
