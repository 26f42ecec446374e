"""Failed calls as exceptions: the status code, the message, and the `google.rpc.ErrorInfo` the services attach.

Every error of a call through :func:`eventflow.client.connect` is an :class:`EventFlowError`. Its class says what
went wrong, from the most specific to the most general, so a caller catches at the level it cares about:

- the ErrorInfo reason, for the answers a program acts on (:class:`SoldOut`, :class:`SeatTaken`,
  :class:`PaymentDeclined`, ...);
- else the status code (:class:`NotFound`, :class:`InvalidArgument`, :class:`Unavailable`, ...), of which the
  reason classes are subclasses (``SoldOut`` is a ``FailedPrecondition``);
- else :class:`EventFlowError` itself.

Each carries ``code()`` (a ``grpc.StatusCode``), ``message``, ``reason`` and ``domain`` (of the ErrorInfo, empty
when the status carried none), ``metadata`` (the ErrorInfo's, for example ``field``, ``reserva_id``,
``disponibles``) and ``retry_delay`` (seconds, from a ``google.rpc.RetryInfo``: RESOURCE_EXHAUSTED says when to
try again). The original ``grpc.RpcError`` is its ``__cause__``. EventFlowError subclasses ``grpc.RpcError``, so
code that catches that keeps working.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
from google.rpc import error_details_pb2  # type: ignore[import-untyped]  # ships no py.typed
from grpc_status import rpc_status  # type: ignore[import-untyped]  # stubs: types-grpcio-status


class EventFlowError(grpc.RpcError):
    """A call failed: `code()`, `message`, and the ErrorInfo's `reason`, `domain` and `metadata`.

    `code()` and `details()` are methods, as on every failed gRPC call, so code written for grpc.RpcError
    reads this one the same way.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        retry_delay: float | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}" + (f" [{reason}]" if reason else ""))
        self._code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        self.retry_delay = retry_delay

    def code(self) -> grpc.StatusCode:
        """The status code, for example grpc.StatusCode.FAILED_PRECONDITION."""
        return self._code

    def details(self) -> str:
        """The message (grpc's name for it)."""
        return self.message

    @property
    def reserva_id(self) -> str:
        """The reservation a failed purchase or cancellation recorded (FALLIDA, readable with GetReserva), or ""
        when the error names none (the request was refused before anything was recorded)."""
        return self.metadata.get("reserva_id", "")


# -- by status code ----------------------------------------------------------------------------------------


class InvalidArgument(EventFlowError):
    """A field breaks a rule; `metadata["field"]` names it where the service knows which."""


class NotFound(EventFlowError):
    """No such user, event or reservation."""


class AlreadyExists(EventFlowError):
    """A unique value is taken (an email, a document)."""


class FailedPrecondition(EventFlowError):
    """The request is well formed but the system's state refuses it (sold out, payment declined, ...)."""


class Unauthenticated(EventFlowError):
    """No valid token: missing, expired, malformed, or of another deployment."""


class PermissionDenied(EventFlowError):
    """The token is valid but its role may not do this."""


class ResourceExhausted(EventFlowError):
    """Over a rate limit or a size limit; `retry_delay` says when to try again, when the service knows."""


class Aborted(EventFlowError):
    """A concurrent change won; the call may be repeated."""


class Unavailable(EventFlowError):
    """A service or a store is down. Calls are retried on UNAVAILABLE before this is raised (see connect)."""


class DeadlineExceeded(EventFlowError):
    """The deadline passed. A purchase may still settle: read it with GetReserva (or repeat Reservar with the
    same idempotency_key)."""


class Internal(EventFlowError):
    """A fault of the service (logged there); not the caller's mistake."""


_BY_CODE: dict[grpc.StatusCode, type[EventFlowError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.INTERNAL: Internal,
}


# -- by ErrorInfo reason: the answers a buyer's program acts on -------------------------------------------


class SoldOut(FailedPrecondition):
    """Not enough tickets left for this purchase (the message says how many there are); nothing was taken."""


class SeatTaken(FailedPrecondition):
    """A seat asked for is sold or held by another purchase."""


class PaymentDeclined(FailedPrecondition):
    """The payment was refused; nothing was charged and the tickets were given back."""


class PaymentTimeout(FailedPrecondition):
    """The payment gateway did not answer in time; nothing stays charged and the tickets were given back."""


class EventPast(FailedPrecondition):
    """The event already happened: no more sales or cancellations."""


class LimitPerBuyerExceeded(FailedPrecondition):
    """Over the event's limit of tickets per buyer (`metadata`: max_por_usuario, compradas, solicitadas)."""


class NotCancellable(FailedPrecondition):
    """Only a CONFIRMADA reservation can be cancelled."""


class IdempotencyKeyReused(FailedPrecondition):
    """This idempotency_key was already used by the same user for another purchase."""


_BY_REASON: dict[str, type[EventFlowError]] = {
    "SOLD_OUT": SoldOut,
    "SEAT_TAKEN": SeatTaken,
    "PAYMENT_DECLINED": PaymentDeclined,
    "PAYMENT_TIMEOUT": PaymentTimeout,
    "EVENT_PAST": EventPast,
    "LIMIT_PER_BUYER_EXCEEDED": LimitPerBuyerExceeded,
    "NOT_CANCELLABLE": NotCancellable,
    "IDEMPOTENCY_KEY_REUSED": IdempotencyKeyReused,
}


def error_class(code: grpc.StatusCode, reason: str) -> type[EventFlowError]:
    """The class an error of this code and reason is raised as."""
    by_reason = _BY_REASON.get(reason)
    if by_reason is not None and issubclass(by_reason, _BY_CODE.get(code, EventFlowError)):
        return by_reason
    return _BY_CODE.get(code, EventFlowError)


def from_rpc_error(error: grpc.RpcError) -> EventFlowError:
    """The EventFlowError for a failed call (a ``grpc.RpcError`` that is also a ``grpc.Call``, sync or asyncio):
    its ErrorInfo and RetryInfo decoded from the ``grpc-status-details-bin`` trailer."""
    call: Any = error  # a grpc.Call too: code(), details(), trailing_metadata()
    code: grpc.StatusCode = call.code()
    message: str = call.details() or ""
    info, retry_delay = None, None
    try:
        status = rpc_status.from_call(call)
    except ValueError:  # a status detail that contradicts the call's code or message: keep the call's own
        status = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_delay = retry.retry_delay.ToTimedelta().total_seconds()
    reason = info.reason if info is not None else ""
    return error_class(code, reason)(
        code,
        message,
        reason=reason,
        domain=info.domain if info is not None else "",
        metadata=dict(info.metadata) if info is not None else None,
        retry_delay=retry_delay,
    )


__all__ = [
    "Aborted",
    "AlreadyExists",
    "DeadlineExceeded",
    "EventFlowError",
    "EventPast",
    "FailedPrecondition",
    "IdempotencyKeyReused",
    "Internal",
    "InvalidArgument",
    "LimitPerBuyerExceeded",
    "NotCancellable",
    "NotFound",
    "PaymentDeclined",
    "PaymentTimeout",
    "PermissionDenied",
    "ResourceExhausted",
    "SeatTaken",
    "SoldOut",
    "Unauthenticated",
    "Unavailable",
    "error_class",
    "from_rpc_error",
]
