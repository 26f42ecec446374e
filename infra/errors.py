"""The error contract shared by every service.

Services raise domain exceptions (subclasses of :class:`DomainError`); each
service maps them to gRPC status codes in one table, and
:class:`ErrorMappingInterceptor` turns them into a rich status with a
``google.rpc.ErrorInfo`` detail. Anything unexpected becomes INTERNAL with a
generic message: no stack trace reaches a client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry import trace

from infra.interceptors import Unary, UnaryInterceptor

log = logging.getLogger(__name__)


class DomainError(Exception):
    """A rule of the domain was broken; `reason` is a stable UPPER_SNAKE_CASE name."""

    reason: str = "DOMAIN_ERROR"

    def __init__(self, message: str, *, reason: str | None = None, metadata: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata: dict[str, str] = {k: str(v) for k, v in (metadata or {}).items()}


class InvalidArgument(DomainError):
    reason = "VALIDATION_FAILED"


class NotFound(DomainError):
    reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    reason = "FAILED_PRECONDITION"


class Unavailable(DomainError):
    reason = "UNAVAILABLE"


class DeadlineExceeded(DomainError):
    reason = "DEADLINE_EXCEEDED"


class Unauthenticated(DomainError):
    """The call carries no valid token (missing, expired, badly signed, for another audience or issuer)."""

    reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    """The caller is who it says, but may not do this; never says whether the target exists."""

    reason = "PERMISSION_DENIED"


class ResourceExhausted(DomainError):
    """The caller went over a limit (a rate); `retry_delay` (seconds) becomes a google.rpc.RetryInfo."""

    reason = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, *, retry_delay: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_delay = retry_delay


#: The default table; a service passes its own when it has more exception types.
DEFAULT_STATUS_TABLE: dict[type[DomainError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


#: How much of a message, and of each ErrorInfo value, an error echoes, in bytes of UTF-8. A status travels
#: in the trailers, which gRPC caps by bytes (it refuses some answers over 8 KiB, every one over 16 KiB): a
#: bad value echoed whole would turn the answer into RESOURCE_EXHAUSTED, and it is no use to a person anyway.
#: Bytes, not characters: a character takes up to 4 bytes, and 12 once percent-encoded in grpc-message.
MAX_MESSAGE = 500
MAX_VALUE = 200
MAX_KEYS = 20


def shorten(text: str, limit: int) -> str:
    """`text`, or as much of it as `limit` bytes of UTF-8 hold, and how long it was."""
    encoded = text.encode(errors="replace")
    if len(encoded) <= limit:
        return text
    return f"{encoded[:limit].decode(errors='ignore')}… ({len(text)} characters)"


def rich_status(
    code: grpc.StatusCode,
    message: str,
    *,
    reason: str,
    domain: str,
    metadata: Mapping[str, str] | None = None,
    retry_delay: float | None = None,
) -> grpc.Status:
    """A gRPC status whose details carry a google.rpc.ErrorInfo (and a RetryInfo when `retry_delay` is given);
    long values are cut to a short prefix."""
    short = {shorten(k, 64): shorten(v, MAX_VALUE) for k, v in list((metadata or {}).items())[:MAX_KEYS]}
    message = shorten(message, MAX_MESSAGE)
    info = error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=short)
    detail = any_pb2.Any()
    detail.Pack(info)
    details = [detail]
    if retry_delay is not None:
        retry = any_pb2.Any()
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
            seconds=int(retry_delay), nanos=int((retry_delay % 1) * 1e9))))  # fmt: skip
        details.append(retry)
    proto = status_pb2.Status(code=code.value[0], message=message, details=details)
    return rpc_status.to_status(proto)


def error_info(error: grpc.aio.AioRpcError | grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo detail of a failed call, if it carries one (client side)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def status_code_for(error: DomainError, table: Mapping[type[DomainError], grpc.StatusCode]) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in table:
            return table[cls]  # type: ignore[index]
    return grpc.StatusCode.FAILED_PRECONDITION


class ErrorMappingInterceptor(UnaryInterceptor):
    """Maps the domain exceptions raised by unary handlers to rich statuses, in one place."""

    def __init__(self, domain: str, table: Mapping[type[DomainError], grpc.StatusCode] | None = None) -> None:
        self.domain = domain
        self.table = {**DEFAULT_STATUS_TABLE, **(table or {})}

    def wrap(self, method: str, metadata: Sequence[Any], inner: Unary) -> Unary:
        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await inner(request, context)
            except DomainError as error:
                code = status_code_for(error, self.table)
                trace.get_current_span().set_attribute("eventflow.error.reason", error.reason)  # the call's span
                await context.abort_with_status(
                    rich_status(
                        code,
                        error.message,
                        reason=error.reason,
                        domain=self.domain,
                        metadata=error.metadata,
                        retry_delay=getattr(error, "retry_delay", None),
                    )
                )
            except (grpc.aio.AbortError, grpc.aio.UsageError):
                raise
            except Exception:
                log.exception("unexpected error", extra={"method": method})
                await context.abort_with_status(
                    rich_status(
                        grpc.StatusCode.INTERNAL,
                        "internal error; it has been logged",
                        reason="INTERNAL",
                        domain=self.domain,
                    )
                )

        return guarded


__all__ = [
    "AlreadyExists",
    "DEFAULT_STATUS_TABLE",
    "DeadlineExceeded",
    "DomainError",
    "ErrorMappingInterceptor",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "error_info",
    "rich_status",
]
