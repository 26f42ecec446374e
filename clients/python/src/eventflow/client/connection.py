"""Channels to the three services: one per service, each with a token, a default deadline, gRPC's own retries
of UNAVAILABLE, and errors raised as :class:`~eventflow.client.errors.EventFlowError`.

:func:`connect` is the synchronous client (``grpc.Channel``), what a script wants; :func:`connect_async` the
same over ``grpc.aio`` for asyncio programs. Both answer an object whose ``usuarios``, ``eventos`` and
``reservas`` are the generated stubs (typed by their .pyi), so every RPC is ``client.<service>.<Rpc>(request)``
with the request messages of ``eventflow.<service>.v1``, and every call still takes ``timeout=``,
``metadata=`` and the rest of gRPC's keywords.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self

import grpc
import grpc.aio

from eventflow.client.errors import from_rpc_error
from eventflow.eventos.v1 import eventos_pb2_grpc
from eventflow.reservas.v1 import reservas_pb2_grpc
from eventflow.usuarios.v1 import usuarios_pb2_grpc

USUARIOS = "eventflow.usuarios.v1.UsuariosService"
EVENTOS = "eventflow.eventos.v1.EventosService"
RESERVAS = "eventflow.reservas.v1.ReservasService"

#: Where each service listens unless told otherwise: the environment variable that names its address (the
#: ones reservas itself reads, plus RESERVAS_ADDR), and the port of `eventflow up` / `make run`.
DEFAULTS = {
    "usuarios": ("USUARIOS_ADDR", 50051),
    "eventos": ("EVENTOS_ADDR", 50052),
    "reservas": ("RESERVAS_ADDR", 50053),
}

#: The deadline of a call that names none, in seconds.
DEFAULT_TIMEOUT = 10.0

#: The RPCs that are not retried: each would make a second user or event if the first attempt's answer, not
#: the attempt, was lost. Every other RPC is safe to repeat (reads, idempotent writes, and Reservar, whose
#: idempotency_key makes a repeat answer the first purchase: see _one_purchase).
NOT_RETRIED = ((USUARIOS, "CreateUsuario"), (EVENTOS, "CreateEvento"))

_RESERVAR = f"/{RESERVAS}/Reservar"


def _one_purchase(method: str | bytes, request: Any) -> Any:
    """A Reservar without an idempotency_key gets a random one, so that gRPC's retries of the call (an attempt
    whose answer was lost when reservas went away mid-purchase) repeat one purchase instead of starting a second.
    The caller's message is left as it was."""
    if method not in (_RESERVAR, _RESERVAR.encode()) or request.idempotency_key:  # grpc.aio names it in bytes
        return request
    keyed = type(request)()
    keyed.CopyFrom(request)
    keyed.idempotency_key = f"client-{uuid.uuid4().hex}"
    return keyed


def service_config(max_attempts: int = 4) -> str:
    """gRPC's service config (JSON) of every channel: UNAVAILABLE is retried by gRPC itself, up to
    `max_attempts` attempts in all, with exponential backoff from 0.1 s to 2 s (within the call's deadline)."""
    retried: dict[str, Any] = {"name": [{"service": s} for s in (USUARIOS, EVENTOS, RESERVAS)]}
    if max_attempts > 1:
        retried["retryPolicy"] = {
            "maxAttempts": max_attempts,
            "initialBackoff": "0.1s",
            "maxBackoff": "2s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
    once = {"name": [{"service": s, "method": m} for s, m in NOT_RETRIED]}  # a method's own config wins
    return json.dumps({"methodConfig": [retried, once]})


def tls_credentials(
    ca: str | Path | None = None, cert: str | Path | None = None, key: str | Path | None = None
) -> grpc.ChannelCredentials:
    """TLS from PEM files: `ca` the certificate authority to trust (None: the system's roots), and `cert` with
    `key` a client certificate, for the services that require one (usuarios and eventos under
    ``eventflow up --tls``: its operator.pem and operator.key)."""

    def read(path: str | Path | None) -> bytes | None:
        return Path(path).read_bytes() if path is not None else None

    return grpc.ssl_channel_credentials(read(ca), read(key), read(cert))


def address(service: str, given: str | None = None, host: str | None = None) -> str:
    """The address of `service`: `given`, else ``$<SERVICE>_ADDR``, else `host` (default localhost) and its
    default port."""
    variable, port = DEFAULTS[service]
    if given:
        return given
    if host is None and os.environ.get(variable):
        return os.environ[variable]
    return f"{host or 'localhost'}:{port}"


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _CallDetails(_Details, grpc.ClientCallDetails):
    """grpc.ClientCallDetails is abstract: this is the usual concrete one (a named tuple)."""


def _with_token(metadata: Any, token: str | None) -> list[tuple[str, Any]]:
    pairs = list(metadata or ())
    if token is not None and not any(k == "authorization" for k, _ in pairs):
        pairs.append(("authorization", f"Bearer {token}"))
    return pairs


class _RaisingOutcome:
    """A call's outcome whose result() raises an EventFlowError instead of the bare grpc.RpcError."""

    def __init__(self, outcome: Any) -> None:
        self._outcome = outcome

    def result(self, timeout: float | None = None) -> Any:
        try:
            return self._outcome.result(timeout)
        except grpc.RpcError as error:
            if not hasattr(error, "code"):
                raise
            raise from_rpc_error(error) from error

    def exception(self, timeout: float | None = None) -> BaseException | None:
        error = self._outcome.exception(timeout)
        return from_rpc_error(error) if isinstance(error, grpc.RpcError) and hasattr(error, "code") else error

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        self._outcome.add_done_callback(lambda _: fn(self))

    def __getattr__(self, name: str) -> Any:  # code(), details(), trailing_metadata(), cancel(), ...
        return getattr(self._outcome, name)


class _Defaults(grpc.UnaryUnaryClientInterceptor):
    """The token and the default deadline on every call; errors as EventFlowError."""

    def __init__(self, token: str | None, timeout: float | None) -> None:
        self.token = token
        self.timeout = timeout

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        new = _CallDetails(
            details.method,
            details.timeout if details.timeout is not None else self.timeout,
            _with_token(details.metadata, self.token),
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )
        return _RaisingOutcome(continuation(new, _one_purchase(details.method, request)))


class _AsyncDefaults(grpc.aio.UnaryUnaryClientInterceptor):
    """The same for grpc.aio: the token, the default deadline, errors as EventFlowError."""

    def __init__(self, token: str | None, timeout: float | None) -> None:
        self.token = token
        self.timeout = timeout

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        new = grpc.aio.ClientCallDetails(
            details.method,
            details.timeout if details.timeout is not None else self.timeout,
            grpc.aio.Metadata(*_with_token(details.metadata, self.token)),
            details.credentials,
            details.wait_for_ready,
        )
        call = await continuation(new, _one_purchase(details.method, request))
        try:
            await call
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from error
        return call


@dataclass(frozen=True)
class _Plan:
    """What connect() and connect_async() share: the three addresses, the channel options, the credentials."""

    addresses: dict[str, str]
    options: list[tuple[str, Any]]
    tls: grpc.ChannelCredentials | None

    @classmethod
    def of(
        cls,
        host: str | None,
        usuarios: str | None,
        eventos: str | None,
        reservas: str | None,
        tls: grpc.ChannelCredentials | None,
        max_attempts: int,
        options: Sequence[tuple[str, Any]],
    ) -> _Plan:
        given = {"usuarios": usuarios, "eventos": eventos, "reservas": reservas}
        addresses = {name: address(name, given[name], host) for name in DEFAULTS}
        base = [("grpc.enable_retries", 1), ("grpc.service_config", service_config(max_attempts))]
        return cls(addresses, [*base, *options], tls)


class EventFlow:
    """The three services over synchronous channels: ``usuarios``, ``eventos`` and ``reservas`` are their
    generated stubs. A context manager; close() closes the channels."""

    def __init__(self, plan: _Plan, token: str | None, timeout: float | None) -> None:
        self.addresses = plan.addresses
        interceptor = _Defaults(token, timeout)

        def channel(name: str) -> grpc.Channel:
            target = plan.addresses[name]
            if plan.tls is None:
                raw = grpc.insecure_channel(target, options=plan.options)
            else:
                raw = grpc.secure_channel(target, plan.tls, options=plan.options)
            return grpc.intercept_channel(raw, interceptor)

        self._channels = [channel("usuarios"), channel("eventos"), channel("reservas")]
        self.usuarios = usuarios_pb2_grpc.UsuariosServiceStub(self._channels[0])
        self.eventos = eventos_pb2_grpc.EventosServiceStub(self._channels[1])
        self.reservas = reservas_pb2_grpc.ReservasServiceStub(self._channels[2])

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncEventFlow:
    """The three services over grpc.aio channels (create it inside the event loop that uses it): ``usuarios``,
    ``eventos`` and ``reservas`` are the generated stubs, whose calls are awaited. An async context manager;
    close() closes the channels."""

    def __init__(self, plan: _Plan, token: str | None, timeout: float | None) -> None:
        self.addresses = plan.addresses
        interceptors = [_AsyncDefaults(token, timeout)]

        def channel(name: str) -> grpc.aio.Channel:
            target = plan.addresses[name]
            if plan.tls is None:
                return grpc.aio.insecure_channel(target, options=plan.options, interceptors=interceptors)
            return grpc.aio.secure_channel(target, plan.tls, options=plan.options, interceptors=interceptors)

        self._channels = [channel("usuarios"), channel("eventos"), channel("reservas")]
        self.usuarios = usuarios_pb2_grpc.UsuariosServiceStub(self._channels[0])
        self.eventos = eventos_pb2_grpc.EventosServiceStub(self._channels[1])
        self.reservas = reservas_pb2_grpc.ReservasServiceStub(self._channels[2])

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def connect(
    host: str | None = None,
    *,
    usuarios: str | None = None,
    eventos: str | None = None,
    reservas: str | None = None,
    token: str | None = None,
    tls: grpc.ChannelCredentials | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    max_attempts: int = 4,
    options: Sequence[tuple[str, Any]] = (),
) -> EventFlow:
    """Channels to the three services. Nothing connects until the first call.

    Addresses: ``usuarios=``, ``eventos=``, ``reservas=`` (``host:port``, or any gRPC target such as
    ``ipv4:127.0.0.1:50053,127.0.0.1:50054`` for reservas' replicas with
    ``options=[("grpc.lb_policy_name", "round_robin")]``); else ``$USUARIOS_ADDR``, ``$EVENTOS_ADDR``,
    ``$RESERVAS_ADDR``; else `host` (default localhost) on ports 50051, 50052, 50053, as ``make run`` serves.
    `host` given, the variables are not read.

    `token`: sent as ``authorization: Bearer <token>`` on every call (``make run`` prints an admin one;
    ``eventflow token`` makes others). `tls`: None for plaintext, or credentials (:func:`tls_credentials`).
    `timeout`: the deadline in seconds of a call that names none (None: no deadline). `max_attempts`: attempts
    of a call that fails with UNAVAILABLE, retried by gRPC with backoff (1: no retries; CreateUsuario and
    CreateEvento are never retried). `options`: more gRPC channel options.
    """
    plan = _Plan.of(host, usuarios, eventos, reservas, tls, max_attempts, options)
    return EventFlow(plan, token, timeout)


def connect_async(
    host: str | None = None,
    *,
    usuarios: str | None = None,
    eventos: str | None = None,
    reservas: str | None = None,
    token: str | None = None,
    tls: grpc.ChannelCredentials | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    max_attempts: int = 4,
    options: Sequence[tuple[str, Any]] = (),
) -> AsyncEventFlow:
    """:func:`connect` for asyncio (grpc.aio): the same arguments; the stubs' calls are awaited."""
    plan = _Plan.of(host, usuarios, eventos, reservas, tls, max_attempts, options)
    return AsyncEventFlow(plan, token, timeout)
