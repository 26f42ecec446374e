"""eventflow.client: the token and a deadline on every call, gRPC's retries of UNAVAILABLE, errors as exceptions.

The remote side is a scripted double of the three generated servicers on a real gRPC server and port, answering
with the statuses the services build (infra.errors.rich_status): it tests the client's channels and translation,
not the services (tests/e2e runs examples/ against `eventflow up` for that).
"""

from __future__ import annotations

import doctest
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import grpc
import pytest
from eventflow import client
from eventflow.client import values
from eventflow.eventos.v1 import eventos_pb2, eventos_pb2_grpc
from eventflow.reservas.v1 import reservas_pb2, reservas_pb2_grpc
from eventflow.usuarios.v1 import usuarios_pb2, usuarios_pb2_grpc

from infra.errors import rich_status

UNAVAILABLE = "unavailable"
HANG = "hang"


@dataclass
class Script:
    """What the double answers, attempt after attempt: UNAVAILABLE, HANG, a grpc.Status, or (when exhausted) OK.
    Every attempt is recorded with its metadata and the deadline it arrived with."""

    steps: list[Any] = field(default_factory=list)
    attempts: list[tuple[str, dict[str, str], float | None]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # the idempotency_key of each Reservar attempt
    release: threading.Event = field(default_factory=threading.Event)

    def play(self, method: str, context: grpc.ServicerContext, reply: Any) -> Any:
        self.attempts.append((method, dict(context.invocation_metadata()), context.time_remaining()))
        step = self.steps.pop(0) if self.steps else None
        if step == UNAVAILABLE:
            context.abort(grpc.StatusCode.UNAVAILABLE, "temporarily down")
        if step == HANG:
            self.release.wait(5)
        if isinstance(step, grpc.Status):
            context.abort_with_status(step)
        return reply


class Usuarios(usuarios_pb2_grpc.UsuariosServiceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    def GetUsuario(self, request, context):  # noqa: ANN001, ANN201, N802 - generated names
        return self.script.play("GetUsuario", context, usuarios_pb2.Usuario(id=request.id, nombre="Ana"))

    def CreateUsuario(self, request, context):  # noqa: ANN001, ANN201, N802
        return self.script.play("CreateUsuario", context, usuarios_pb2.Usuario(id="u-1"))


class Eventos(eventos_pb2_grpc.EventosServiceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    def CreateEvento(self, request, context):  # noqa: ANN001, ANN201, N802
        return self.script.play("CreateEvento", context, eventos_pb2.Evento(id="e-1"))


class Reservas(reservas_pb2_grpc.ReservasServiceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    def Reservar(self, request, context):  # noqa: ANN001, ANN201, N802
        self.script.keys.append(request.idempotency_key)
        reply = reservas_pb2.Reserva(id="r-1", estado=reservas_pb2.ESTADO_RESERVA_CONFIRMADA)
        return self.script.play("Reservar", context, reply)


@pytest.fixture(scope="module")
def double() -> Iterator[tuple[str, Script]]:
    script = Script()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    usuarios_pb2_grpc.add_UsuariosServiceServicer_to_server(Usuarios(script), server)
    eventos_pb2_grpc.add_EventosServiceServicer_to_server(Eventos(script), server)
    reservas_pb2_grpc.add_ReservasServiceServicer_to_server(Reservas(script), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", script
    script.release.set()
    server.stop(0)


@pytest.fixture
def script(double: tuple[str, Script]) -> Script:
    _, script = double
    script.steps.clear()
    script.attempts.clear()
    script.keys.clear()
    return script


def connect(double: tuple[str, Script], **kwargs: Any) -> client.EventFlow:
    address, _ = double
    return client.connect(usuarios=address, eventos=address, reservas=address, **kwargs)


class _Plain(NamedTuple("_Status", [("code", grpc.StatusCode), ("details", str), ("trailing_metadata", tuple)]),
             grpc.Status):
    """A status with no details (no ErrorInfo), as context.abort() sends."""


GET = usuarios_pb2.GetUsuarioRequest(id="u-1")
RESERVAR = reservas_pb2.ReservarRequest(usuario_id="u-1", evento_id="e-1", cantidad=1, idempotency_key="k-1")


# -- retries: gRPC's, from the service config --------------------------------------------------------------


def test_a_reservar_without_a_key_gets_one_so_its_retries_are_one_purchase(
    double: tuple[str, Script], script: Script
) -> None:
    script.steps[:] = [UNAVAILABLE, UNAVAILABLE]
    request = reservas_pb2.ReservarRequest(usuario_id="u-1", evento_id="e-1", cantidad=1)
    with connect(double) as ef:
        assert ef.reservas.Reservar(request).id == "r-1"
        ef.reservas.Reservar(RESERVAR)  # a key of the caller's own is sent as it is
    first, second, third, own = script.keys
    assert first.startswith("client-") and first == second == third and own == "k-1"
    assert request.idempotency_key == ""  # the caller's message is untouched
    script.keys.clear()
    with connect(double) as ef:
        ef.reservas.Reservar(request)
    assert script.keys[0] not in (first, "")  # a new call, a new purchase, a new key


async def test_the_async_client_keys_a_reservar_without_a_key_too(double: tuple[str, Script], script: Script) -> None:
    script.steps[:] = [UNAVAILABLE]
    address, _ = double
    async with client.connect_async(usuarios=address, eventos=address, reservas=address) as ef:
        await ef.reservas.Reservar(reservas_pb2.ReservarRequest(usuario_id="u-1", evento_id="e-1", cantidad=1))
    assert len(script.keys) == 2 and script.keys[0] == script.keys[1] and script.keys[0].startswith("client-")


def test_unavailable_is_retried_by_grpc_until_an_attempt_succeeds(double: tuple[str, Script], script: Script) -> None:
    script.steps[:] = [UNAVAILABLE, UNAVAILABLE]
    with connect(double, token="t") as ef:
        assert ef.usuarios.GetUsuario(GET).nombre == "Ana"
        script.steps[:] = [UNAVAILABLE]
        assert ef.reservas.Reservar(RESERVAR).id == "r-1"  # its idempotency_key makes a repeat safe
    assert [method for method, _, _ in script.attempts] == ["GetUsuario"] * 3 + ["Reservar"] * 2


def test_retries_stop_at_max_attempts_and_raise_unavailable(double: tuple[str, Script], script: Script) -> None:
    script.steps[:] = [UNAVAILABLE] * 5
    with connect(double, max_attempts=3) as ef, pytest.raises(client.Unavailable) as raised:
        ef.usuarios.GetUsuario(GET)
    assert len(script.attempts) == 3
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE and raised.value.message == "temporarily down"


@pytest.mark.parametrize(
    ("call", "method"),
    [
        (lambda ef: ef.usuarios.CreateUsuario(usuarios_pb2.CreateUsuarioRequest()), "CreateUsuario"),
        (lambda ef: ef.eventos.CreateEvento(eventos_pb2.CreateEventoRequest()), "CreateEvento"),
    ],
)
def test_creations_are_never_retried(double: tuple[str, Script], script: Script, call: Any, method: str) -> None:
    """A lost answer to a create would make a second user or event: those RPCs are tried once."""
    script.steps[:] = [UNAVAILABLE]
    with connect(double) as ef, pytest.raises(client.Unavailable):
        call(ef)
    assert [m for m, _, _ in script.attempts] == [method]


def test_no_retries_with_max_attempts_1(double: tuple[str, Script], script: Script) -> None:
    script.steps[:] = [UNAVAILABLE]
    with connect(double, max_attempts=1) as ef, pytest.raises(client.Unavailable):
        ef.usuarios.GetUsuario(GET)
    assert len(script.attempts) == 1


# -- the token and the deadline ------------------------------------------------------------------------------


def test_every_call_carries_the_token_and_a_default_deadline(double: tuple[str, Script], script: Script) -> None:
    with connect(double, token="tok-123") as ef:
        ef.usuarios.GetUsuario(GET)
        ef.usuarios.GetUsuario(GET, timeout=60)  # the call's own deadline wins, longer than the default too
    (_, metadata, remaining), (_, _, longer) = script.attempts
    assert metadata["authorization"] == "Bearer tok-123"
    # gRPC sends the deadline rounded up to its timer's precision: within a second of the default.
    assert remaining is not None and client.DEFAULT_TIMEOUT - 2 < remaining < client.DEFAULT_TIMEOUT + 1
    assert longer is not None and longer > client.DEFAULT_TIMEOUT + 40


def test_without_a_token_no_authorization_is_sent(double: tuple[str, Script], script: Script) -> None:
    with connect(double, timeout=None) as ef:
        ef.usuarios.GetUsuario(GET)
    [(_, metadata, remaining)] = script.attempts
    assert "authorization" not in metadata
    assert remaining is not None and remaining > 10**9  # timeout=None: no deadline (gRPC's "infinite")


def test_a_call_past_its_deadline_raises_deadline_exceeded(double: tuple[str, Script], script: Script) -> None:
    script.steps[:] = [HANG]
    with connect(double, timeout=0.3) as ef, pytest.raises(client.DeadlineExceeded) as raised:
        ef.reservas.Reservar(RESERVAR)
    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED


# -- errors: the ErrorInfo decoded, a class by reason or by code ---------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected", "reason", "metadata"),
    [
        (rich_status(grpc.StatusCode.FAILED_PRECONDITION, "only 1 left", reason="SOLD_OUT", domain="reservas.eventflow",
                     metadata={"disponibles": "1", "evento_id": "e-1"}),
         client.SoldOut, "SOLD_OUT", {"disponibles": "1", "evento_id": "e-1"}),
        (rich_status(grpc.StatusCode.FAILED_PRECONDITION, "declined", reason="PAYMENT_DECLINED",
                     domain="reservas.eventflow", metadata={"reserva_id": "r-9"}),
         client.PaymentDeclined, "PAYMENT_DECLINED", {"reserva_id": "r-9"}),
        (rich_status(grpc.StatusCode.NOT_FOUND, "no usuario", reason="USUARIO_NOT_FOUND", domain="usuarios.eventflow"),
         client.NotFound, "USUARIO_NOT_FOUND", {}),
        (rich_status(grpc.StatusCode.INVALID_ARGUMENT, "cantidad must be from 1 to 10", reason="VALIDATION_FAILED",
                     domain="reservas.eventflow", metadata={"field": "cantidad"}),
         client.InvalidArgument, "VALIDATION_FAILED", {"field": "cantidad"}),
        # A known reason under a code it does not belong to is classed by its code.
        (rich_status(grpc.StatusCode.INTERNAL, "odd", reason="SOLD_OUT", domain="x"), client.Internal, "SOLD_OUT", {}),
    ],
)  # fmt: skip
def test_a_rich_status_becomes_its_exception(
    double: tuple[str, Script], script: Script, status: grpc.Status, expected: type, reason: str, metadata: dict
) -> None:
    script.steps[:] = [status]
    with connect(double) as ef, pytest.raises(client.EventFlowError) as raised:
        ef.reservas.Reservar(RESERVAR)
    error = raised.value
    assert type(error) is expected
    assert error.code() is status.code and error.message == status.details
    assert error.reason == reason and error.metadata == metadata and error.domain
    assert isinstance(error, grpc.RpcError) and isinstance(error.__cause__, grpc.RpcError)
    assert error.reserva_id == metadata.get("reserva_id", "")
    assert len(script.attempts) == 1  # only UNAVAILABLE is retried


def test_sold_out_is_a_failed_precondition() -> None:
    assert issubclass(client.SoldOut, client.FailedPrecondition)
    new_reason = client.errors.error_class(grpc.StatusCode.FAILED_PRECONDITION, "SOME_NEW_REASON")
    assert new_reason is client.FailedPrecondition
    assert client.errors.error_class(grpc.StatusCode.DATA_LOSS, "") is client.EventFlowError


def test_retry_info_becomes_retry_delay(double: tuple[str, Script], script: Script) -> None:
    script.steps[:] = [rich_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", reason="RATE_LIMITED",
                                   domain="usuarios.eventflow", retry_delay=1.5)]  # fmt: skip
    with connect(double) as ef, pytest.raises(client.ResourceExhausted) as raised:
        ef.usuarios.GetUsuario(GET)
    assert raised.value.retry_delay == 1.5 and raised.value.reason == "RATE_LIMITED"


def test_a_status_without_details_is_classed_by_its_code(double: tuple[str, Script], script: Script) -> None:
    script.steps[:] = [_Plain(grpc.StatusCode.PERMISSION_DENIED, "no", ())]
    with connect(double) as ef, pytest.raises(client.PermissionDenied) as raised:
        ef.usuarios.GetUsuario(GET)
    assert raised.value.reason == "" and raised.value.metadata == {} and raised.value.message == "no"


def test_future_calls_raise_the_same_exceptions(double: tuple[str, Script], script: Script) -> None:
    script.steps[:] = [rich_status(grpc.StatusCode.FAILED_PRECONDITION, "taken", reason="SEAT_TAKEN", domain="x")]
    with connect(double) as ef:
        pending = ef.reservas.Reservar.future(RESERVAR)
        assert isinstance(pending.exception(), client.SeatTaken)
        with pytest.raises(client.SeatTaken):
            pending.result()
        reply, call = ef.usuarios.GetUsuario.with_call(GET)
    assert reply.id == "u-1" and call.code() is grpc.StatusCode.OK


# -- asyncio ------------------------------------------------------------------------------------------------------


async def test_the_asyncio_client_has_the_same_token_deadline_retries_and_errors(
    double: tuple[str, Script], script: Script
) -> None:
    address, _ = double
    script.steps[:] = [UNAVAILABLE]
    async with client.connect_async(usuarios=address, eventos=address, reservas=address, token="tok-a") as ef:
        assert (await ef.usuarios.GetUsuario(GET)).nombre == "Ana"
        script.steps[:] = [rich_status(grpc.StatusCode.FAILED_PRECONDITION, "gone", reason="SOLD_OUT", domain="x")]
        with pytest.raises(client.SoldOut) as raised:
            await ef.reservas.Reservar(RESERVAR)
    assert raised.value.reason == "SOLD_OUT" and raised.value.message == "gone"
    assert [m for m, _, _ in script.attempts] == ["GetUsuario", "GetUsuario", "Reservar"]
    _, metadata, remaining = script.attempts[0]
    assert metadata["authorization"] == "Bearer tok-a"
    assert remaining is not None and remaining < client.DEFAULT_TIMEOUT + 1


# -- addresses ----------------------------------------------------------------------------------------------------


def test_addresses_from_arguments_then_environment_then_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTOS_ADDR", "eventos.internal:7000")
    monkeypatch.delenv("USUARIOS_ADDR", raising=False)
    monkeypatch.delenv("RESERVAS_ADDR", raising=False)
    with client.connect(reservas="ipv4:127.0.0.1:50053,127.0.0.1:50054") as ef:
        assert ef.addresses == {"usuarios": "localhost:50051", "eventos": "eventos.internal:7000",
                                "reservas": "ipv4:127.0.0.1:50053,127.0.0.1:50054"}  # fmt: skip
    with client.connect("10.0.0.5") as ef:  # a host given: the variables are not read
        assert ef.addresses["eventos"] == "10.0.0.5:50052"


# -- values -----------------------------------------------------------------------------------------------------


def test_timestamps_and_enum_names() -> None:
    when = datetime(2027, 3, 14, 21, 0, tzinfo=UTC)
    assert values.timestamp(when) == values.timestamp("2027-03-14T21:00:00Z")
    assert values.to_datetime(values.timestamp(when)) == when
    with pytest.raises(ValueError, match="no time zone"):
        values.timestamp(datetime(2027, 3, 14, 21, 0))  # noqa: DTZ001 - the point of the test
    for number in reservas_pb2.EstadoReserva.values():
        short = client.name(reservas_pb2.EstadoReserva, number)
        assert not short.startswith("ESTADO_RESERVA_")
        assert client.value(reservas_pb2.EstadoReserva, short.lower()) == number
    assert client.value(reservas_pb2.EstadoReserva, "ESTADO_RESERVA_FALLIDA") == reservas_pb2.ESTADO_RESERVA_FALLIDA
    assert doctest.testmod(values).failed == 0
