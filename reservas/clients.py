"""Reservas' clients of usuarios and eventos, over the generated stubs.

Every call has a deadline (`timeout`, per attempt). Every method here is idempotent on
the remote side (reads, and writes keyed by reserva_id), so a call that failed with
UNAVAILABLE or DEADLINE_EXCEEDED is retried, up to `attempts` attempts in all, after an
exponential backoff with jitter; no other failure is retried.

A remote failure becomes a domain error that keeps the remote ErrorInfo's reason and
metadata (NOT_FOUND -> NotFound, FAILED_PRECONDITION -> FailedPrecondition, ...), so
the saga can answer SOLD_OUT or EVENTO_NOT_FOUND as eventos said it. A dependency that
stays unreachable becomes `Unavailable(reason="DEPENDENCY_UNAVAILABLE",
metadata={"service": ...})`. Channels are created once per process by the server
builder and passed in.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc
from eventflow.eventos.v1 import eventos_pb2, eventos_pb2_grpc
from eventflow.usuarios.v1 import usuarios_pb2, usuarios_pb2_grpc
from google.protobuf.message import Message

from infra import tracing
from infra.backoff import jittered
from infra.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    error_info,
)

log = logging.getLogger(__name__)

Response = TypeVar("Response")

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

_TRANSLATION: dict[grpc.StatusCode, type[DomainError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
}


def translate(error: grpc.aio.AioRpcError, service: str) -> DomainError:
    """The domain error a remote failure stands for, keeping the remote reason and metadata."""
    code = error.code()
    info = error_info(error)
    if code in RETRYABLE:
        return Unavailable(
            f"{service} is unavailable ({code.name}); try again shortly",
            reason="DEPENDENCY_UNAVAILABLE",
            metadata={"service": service},
        )
    cls = _TRANSLATION.get(code)
    if cls is None:  # INTERNAL, UNKNOWN, ...: the dependency failed, not the caller
        return Unavailable(
            f"{service} failed ({code.name}); try again shortly",
            reason="DEPENDENCY_ERROR",
            metadata={"service": service, "code": code.name},
        )
    return cls(
        error.details() or f"{service} answered {code.name}",
        reason=info.reason if info is not None and info.reason else None,
        metadata=dict(info.metadata) if info is not None else None,
    )


class _Client:
    """Deadline, bounded retries with backoff and jitter, error translation."""

    service = ""
    full_name = ""  # the gRPC service, as in its proto

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        timeout: float = 2.0,
        attempts: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 2.0,
        token: Callable[[], str] | None = None,
    ) -> None:
        """`timeout`: the deadline of each attempt; `backoff`: the first retry's delay ceiling, doubled each time;
        `token`: reservas' own servicio token, sent as `authorization: Bearer` metadata on every call."""
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        self.channel = channel
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.token = token

    def _delay(self, attempt: int) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random."""
        return jittered(attempt, self.backoff, self.max_backoff)

    async def _call(self, rpc: Callable[..., Awaitable[Response]], request: Message) -> Response:
        # One request message per RPC, named after it (GetUsuarioRequest): the method, for the trace.
        method = f"/{self.full_name}/{request.DESCRIPTOR.name.removesuffix('Request')}"
        for attempt in range(1, self.attempts + 1):
            try:
                # Metadata on the call rather than a channel interceptor: grpc.aio's interceptor path costs more.
                # A span per attempt (infra.tracing), whose context travels in the metadata too.
                auth = (("authorization", f"Bearer {self.token()}"),) if self.token is not None else ()
                with tracing.client_span(method, auth) as metadata:
                    return await rpc(request, timeout=self.timeout, metadata=metadata or None)
            except grpc.aio.AioRpcError as error:
                if error.code() not in RETRYABLE or attempt == self.attempts:
                    raise translate(error, self.service) from error
                delay = self._delay(attempt)
                log.warning(
                    "retrying a call",
                    extra={"dependency": self.service, "code": error.code().name, "attempt": attempt, "delay": delay},
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


class UsuariosClient(_Client):
    service = "usuarios"
    full_name = "eventflow.usuarios.v1.UsuariosService"

    @functools.cached_property
    def _stub(self) -> usuarios_pb2_grpc.UsuariosServiceStub:
        return usuarios_pb2_grpc.UsuariosServiceStub(self.channel)

    async def get_usuario(self, usuario_id: str) -> usuarios_pb2.Usuario:
        return await self._call(self._stub.GetUsuario, usuarios_pb2.GetUsuarioRequest(id=usuario_id))

    async def registrar_compra(self, usuario_id: str, reserva_id: str) -> None:
        request = usuarios_pb2.RegistrarCompraRequest(usuario_id=usuario_id, reserva_id=reserva_id)
        await self._call(self._stub.RegistrarCompra, request)

    async def anular_compra(self, usuario_id: str, reserva_id: str) -> None:
        request = usuarios_pb2.AnularCompraRequest(usuario_id=usuario_id, reserva_id=reserva_id)
        await self._call(self._stub.AnularCompra, request)


class EventosClient(_Client):
    service = "eventos"
    full_name = "eventflow.eventos.v1.EventosService"

    @functools.cached_property
    def _stub(self) -> eventos_pb2_grpc.EventosServiceStub:
        return eventos_pb2_grpc.EventosServiceStub(self.channel)

    async def get_evento(self, evento_id: str, fields: Sequence[str] = ()) -> eventos_pb2.Evento:
        """The event; `fields` (names of Evento's fields) asks for only those, empty for all of them.

        Leaving out `asientos` and `asientos_disponibles` spares eventos a read of every seat of a
        seated event (`con_asientos` says whether it has a seat map).
        """
        request = eventos_pb2.GetEventoRequest(id=evento_id)
        request.read_mask.paths.extend(fields)
        return await self._call(self._stub.GetEvento, request)

    async def reservar_entradas(
        self, evento_id: str, reserva_id: str, cantidad: int, asientos: Sequence[str], usuario_id: str = ""
    ) -> eventos_pb2.ReservarEntradasResponse:
        """What reserva_id holds (also on a retry), with the event's tickets left and inventory version.

        `usuario_id`, the buyer, is counted against the event's max_por_usuario (LIMIT_PER_BUYER_EXCEEDED)."""
        request = eventos_pb2.ReservarEntradasRequest(
            evento_id=evento_id, reserva_id=reserva_id, cantidad=cantidad, asientos=list(asientos), usuario_id=usuario_id
        )
        return await self._call(self._stub.ReservarEntradas, request)

    async def liberar_entradas(self, evento_id: str, reserva_id: str) -> eventos_pb2.LiberarEntradasResponse:
        """What reserva_id gave back (cantidad 0 if it held nothing), with the event's tickets left and inventory version."""
        request = eventos_pb2.LiberarEntradasRequest(evento_id=evento_id, reserva_id=reserva_id)
        return await self._call(self._stub.LiberarEntradas, request)
