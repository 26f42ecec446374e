"""The clients of usuarios and eventos: deadlines, bounded retries, error translation.

The remote side is a scripted test double of the generated servicer, served by a real
grpc.aio server on a real port: it tests the clients' retry and translation logic, not
the services (their own suites do that).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from eventflow.eventos.v1 import eventos_pb2, eventos_pb2_grpc
from eventflow.usuarios.v1 import usuarios_pb2, usuarios_pb2_grpc

from infra import procs
from infra.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable, rich_status
from reservas.clients import EventosClient, UsuariosClient
from callers import AUTH, PAGE_TOKEN_KEY, open_channel

UNAVAILABLE = "unavailable"
HANG = "hang"


@dataclass
class Script:
    """What the double answers, call after call: UNAVAILABLE, HANG, a grpc.Status, or (when exhausted) OK."""

    steps: list[Any] = field(default_factory=list)
    requests: list[Any] = field(default_factory=list)

    async def play(self, request: Any, context: grpc.aio.ServicerContext, reply: Any) -> Any:
        self.requests.append(request)
        step = self.steps.pop(0) if self.steps else None
        if step == UNAVAILABLE:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "temporarily down")
        if step == HANG:
            await asyncio.Event().wait()
        if isinstance(step, grpc.Status):
            await context.abort_with_status(step)
        return reply


class FakeUsuarios(usuarios_pb2_grpc.UsuariosServiceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    async def GetUsuario(self, request, context):  # noqa: ANN001, ANN201, N802
        return await self.script.play(request, context, usuarios_pb2.Usuario(id=request.id, nombre="Ana"))

    async def RegistrarCompra(self, request, context):  # noqa: ANN001, ANN201, N802
        reply = usuarios_pb2.Usuario(id=request.usuario_id, historial_compras=[request.reserva_id])
        return await self.script.play(request, context, reply)

    async def AnularCompra(self, request, context):  # noqa: ANN001, ANN201, N802
        return await self.script.play(request, context, usuarios_pb2.Usuario(id=request.usuario_id))


class FakeEventos(eventos_pb2_grpc.EventosServiceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    async def GetEvento(self, request, context):  # noqa: ANN001, ANN201, N802
        return await self.script.play(request, context, eventos_pb2.Evento(id=request.id, nombre="Concierto"))

    async def ReservarEntradas(self, request, context):  # noqa: ANN001, ANN201, N802
        reply = eventos_pb2.ReservarEntradasResponse(evento_id=request.evento_id, reserva_id=request.reserva_id)
        return await self.script.play(request, context, reply)

    async def LiberarEntradas(self, request, context):  # noqa: ANN001, ANN201, N802
        reply = eventos_pb2.LiberarEntradasResponse(evento_id=request.evento_id, reserva_id=request.reserva_id)
        return await self.script.play(request, context, reply)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[Script, grpc.aio.Channel]]:
    """One scripted double of both services on 127.0.0.1:<free port>, and a channel to it."""
    script = Script()
    server = grpc.aio.server()
    usuarios_pb2_grpc.add_UsuariosServiceServicer_to_server(FakeUsuarios(script), server)
    eventos_pb2_grpc.add_EventosServiceServicer_to_server(FakeEventos(script), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with open_channel(f"127.0.0.1:{port}") as channel:
        yield script, channel
    await server.stop(grace=0)


def status(code: grpc.StatusCode, reason: str, **metadata: str) -> grpc.Status:
    return rich_status(code, f"{reason.lower()} happened", reason=reason, domain="eventflow.test", metadata=metadata)


async def test_unavailable_is_retried_until_it_succeeds(fake: tuple[Script, grpc.aio.Channel]) -> None:
    script, channel = fake
    script.steps = [UNAVAILABLE, UNAVAILABLE]
    client = UsuariosClient(channel, timeout=5, attempts=3, backoff=0.01)
    usuario = await client.get_usuario("u1")
    assert (usuario.id, usuario.nombre) == ("u1", "Ana")
    assert len(script.requests) == 3


async def test_attempts_are_bounded(fake: tuple[Script, grpc.aio.Channel]) -> None:
    script, channel = fake
    script.steps = [UNAVAILABLE] * 5
    client = EventosClient(channel, timeout=5, attempts=3, backoff=0.01)
    with pytest.raises(Unavailable) as raised:
        await client.get_evento("e1")
    assert raised.value.reason == "DEPENDENCY_UNAVAILABLE"
    assert raised.value.metadata == {"service": "eventos"}
    assert len(script.requests) == 3


async def test_not_found_keeps_the_remote_reason_and_is_not_retried(fake: tuple[Script, grpc.aio.Channel]) -> None:
    script, channel = fake
    script.steps = [status(grpc.StatusCode.NOT_FOUND, "USUARIO_NOT_FOUND", usuario_id="u9")]
    client = UsuariosClient(channel, timeout=5, attempts=3, backoff=0.01)
    with pytest.raises(NotFound) as raised:
        await client.get_usuario("u9")
    assert raised.value.reason == "USUARIO_NOT_FOUND"
    assert raised.value.metadata == {"usuario_id": "u9"}
    assert raised.value.message == "usuario_not_found happened"
    assert len(script.requests) == 1


async def test_failed_precondition_keeps_reason_and_metadata(fake: tuple[Script, grpc.aio.Channel]) -> None:
    script, channel = fake
    script.steps = [status(grpc.StatusCode.FAILED_PRECONDITION, "SEAT_TAKEN", asientos="A1,A2")]
    client = EventosClient(channel, timeout=5, attempts=3, backoff=0.01)
    with pytest.raises(FailedPrecondition) as raised:
        await client.reservar_entradas("e1", "r1", 2, ["A1", "A2"])
    assert (raised.value.reason, raised.value.metadata) == ("SEAT_TAKEN", {"asientos": "A1,A2"})
    assert len(script.requests) == 1


async def test_invalid_argument_is_translated(fake: tuple[Script, grpc.aio.Channel]) -> None:
    script, channel = fake
    script.steps = [status(grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", field="cantidad")]
    with pytest.raises(InvalidArgument) as raised:
        await EventosClient(channel, backoff=0.01).reservar_entradas("e1", "r1", 0, [])
    assert (raised.value.reason, raised.value.metadata) == ("VALIDATION_FAILED", {"field": "cantidad"})


async def test_a_status_without_error_info_gets_the_class_reason() -> None:
    class Plain(FakeEventos):
        async def GetEvento(self, request, context):  # noqa: ANN001, ANN201, N802
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such event")

    server = grpc.aio.server()
    eventos_pb2_grpc.add_EventosServiceServicer_to_server(Plain(Script()), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with open_channel(f"127.0.0.1:{port}") as plain:
            with pytest.raises(NotFound) as raised:
                await EventosClient(plain, backoff=0.01).get_evento("e1")
        assert (raised.value.reason, raised.value.message, raised.value.metadata) == ("NOT_FOUND", "no such event", {})
    finally:
        await server.stop(grace=0)


async def test_internal_is_a_dependency_error_not_retried(fake: tuple[Script, grpc.aio.Channel]) -> None:
    script, channel = fake
    script.steps = [status(grpc.StatusCode.INTERNAL, "INTERNAL")]
    with pytest.raises(Unavailable) as raised:
        await UsuariosClient(channel, backoff=0.01).registrar_compra("u1", "r1")
    assert raised.value.reason == "DEPENDENCY_ERROR"
    assert raised.value.metadata == {"service": "usuarios", "code": "INTERNAL"}
    assert len(script.requests) == 1


async def test_a_hung_server_hits_the_deadline_is_retried_then_unavailable(
    fake: tuple[Script, grpc.aio.Channel],
) -> None:
    script, channel = fake
    script.steps = [HANG, HANG, HANG]
    client = EventosClient(channel, timeout=0.2, attempts=2, backoff=0.01)
    with pytest.raises(Unavailable) as raised:
        await client.liberar_entradas("e1", "r1")
    assert raised.value.reason == "DEPENDENCY_UNAVAILABLE"
    assert raised.value.metadata == {"service": "eventos"}
    assert len(script.requests) == 2


async def test_a_hang_then_success_recovers(fake: tuple[Script, grpc.aio.Channel]) -> None:
    script, channel = fake
    script.steps = [HANG]
    client = UsuariosClient(channel, timeout=0.2, attempts=3, backoff=0.01)
    await client.anular_compra("u1", "r1")
    assert len(script.requests) == 2


async def test_nothing_listening_is_unavailable_without_waiting_for_the_deadline() -> None:
    port = procs.free_port()
    async with open_channel(f"127.0.0.1:{port}") as channel:
        client = UsuariosClient(channel, timeout=60, attempts=3, backoff=0.01)
        # With a 60 s deadline per attempt, finishing within 30 s proves a refused connection is not waited on.
        with pytest.raises(Unavailable) as raised:
            await asyncio.wait_for(client.get_usuario("u1"), 30)
    assert raised.value.reason == "DEPENDENCY_UNAVAILABLE"
    assert raised.value.metadata == {"service": "usuarios"}


async def test_requests_carry_the_arguments(fake: tuple[Script, grpc.aio.Channel]) -> None:
    script, channel = fake
    eventos = EventosClient(channel)
    usuarios = UsuariosClient(channel)
    taken = await eventos.reservar_entradas("e1", "r1", 2, ("A1", "A2"))
    assert (taken.evento_id, taken.reserva_id) == ("e1", "r1")
    await eventos.liberar_entradas("e1", "r1")
    assert (await eventos.get_evento("e2")).nombre == "Concierto"
    await usuarios.registrar_compra("u1", "r1")
    await usuarios.anular_compra("u1", "r1")
    await eventos.get_evento("e3", ["fecha", "con_asientos"])
    reservar, liberar, get, registrar, anular, masked = script.requests
    assert (reservar.evento_id, reservar.reserva_id, reservar.cantidad, list(reservar.asientos)) == (
        "e1", "r1", 2, ["A1", "A2"],
    )  # fmt: skip
    assert (liberar.evento_id, liberar.reserva_id) == ("e1", "r1")
    assert (get.id, list(get.read_mask.paths)) == ("e2", [])
    assert (masked.id, list(masked.read_mask.paths)) == ("e3", ["fecha", "con_asientos"])
    assert (registrar.usuario_id, registrar.reserva_id) == ("u1", "r1")
    assert (anular.usuario_id, anular.reserva_id) == ("u1", "r1")


async def test_backoff_grows_exponentially_with_jitter_and_is_capped(fake: tuple[Script, grpc.aio.Channel]) -> None:
    client = UsuariosClient(fake[1], backoff=0.1, max_backoff=0.5)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (10, 0.5)]:
        delays = {client._delay(attempt) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered


# ---- against the real services -----------------------------------------------------------


async def test_usuarios_client_against_the_real_service(
    mongo_uri: str, db_name: Callable[[str], str], start_app: Any
) -> None:
    from usuarios.config import Config  # noqa: PLC0415
    from usuarios.server import create_app  # noqa: PLC0415

    config = Config(
        auth=AUTH, port=0, bind_host="127.0.0.1", mongodb_uri=mongo_uri, mongodb_database=db_name("usuarios"),
        page_token_key=PAGE_TOKEN_KEY,
    )
    address = await start_app(create_app(config))
    async with open_channel(address) as channel:
        nuevo = usuarios_pb2.Usuario(
            tipo_documento="DNI", nro_documento="12345678", nombre="Ana", apellido="Pérez", email="ana@example.com"
        )
        creado = await usuarios_pb2_grpc.UsuariosServiceStub(channel).CreateUsuario(
            usuarios_pb2.CreateUsuarioRequest(usuario=nuevo)
        )
        client = UsuariosClient(channel)
        await client.registrar_compra(creado.id, "r1")
        await client.registrar_compra(creado.id, "r1")  # idempotent: a retry keeps one entry
        assert list((await client.get_usuario(creado.id)).historial_compras) == ["r1"]
        await client.anular_compra(creado.id, "r1")
        assert list((await client.get_usuario(creado.id)).historial_compras) == []
        with pytest.raises(NotFound) as raised:
            await client.get_usuario("no-such-usuario")
        assert raised.value.reason == "USUARIO_NOT_FOUND"


async def test_eventos_client_against_the_real_service(
    mongo_uri: str, db_name: Callable[[str], str], start_app: Any
) -> None:
    from eventos.config import Config  # noqa: PLC0415
    from eventos.server import create_app  # noqa: PLC0415

    config = Config(
        auth=AUTH, port=0, bind_host="127.0.0.1", mongodb_uri=mongo_uri, mongodb_database=db_name("eventos"),
        page_token_key=PAGE_TOKEN_KEY,
    )
    address = await start_app(create_app(config))
    async with open_channel(address) as channel:
        nuevo = eventos_pb2.Evento(nombre="Concierto", lugar="Antel Arena", precio=250_000, asientos=["A1", "A2"])
        nuevo.fecha.FromDatetime(datetime(2030, 3, 14, 21, 0, tzinfo=UTC))
        creado = await eventos_pb2_grpc.EventosServiceStub(channel).CreateEvento(
            eventos_pb2.CreateEventoRequest(evento=nuevo)
        )
        client = EventosClient(channel)
        taken = await client.reservar_entradas(creado.id, "r1", 1, ["A1"])
        assert (taken.cantidad, list(taken.asientos), taken.entradas_disponibles) == (1, ["A1"], 1)
        assert list((await client.get_evento(creado.id)).asientos_disponibles) == ["A2"]
        with pytest.raises(FailedPrecondition) as raised:
            await client.reservar_entradas(creado.id, "r2", 1, ["A1"])
        assert raised.value.reason == "SEAT_TAKEN"
        assert raised.value.metadata["inventario_version"] == str(taken.inventario_version)
        given = await client.liberar_entradas(creado.id, "r1")
        assert (given.cantidad, given.inventario_version) == (1, taken.inventario_version + 1)
        assert list((await client.get_evento(creado.id)).asientos_disponibles) == ["A1", "A2"]
        assert (await client.get_evento(creado.id)).entradas_disponibles == 2
        masked = await client.get_evento(creado.id, ["entradas_disponibles", "con_asientos"])
        assert masked == eventos_pb2.Evento(entradas_disponibles=2, con_asientos=True)
        with pytest.raises(NotFound) as raised:
            await client.get_evento("no-such-evento")
        assert raised.value.reason == "EVENTO_NOT_FOUND"
