"""The one way EventFlow's server interceptors wrap a call: every RPC is unary, so an interceptor wraps the
unary handler and keeps its (de)serializers. The error mapping, authentication, metrics
and tracing are all this."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

Unary = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]

#: The standard services every server carries beside its own: health, and server reflection (v1 and v1alpha).
HEALTH = "/grpc.health.v1.Health/"
REFLECTION = ("/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha.ServerReflection/")
#: Their methods: open to anyone (infra.auth), not traced (infra.tracing: a probe's Check every few seconds would
#: be most of the traces).
STANDARD_SERVICES = (HEALTH, *REFLECTION)


def status_of(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    """The status code the caller gets for a call that returned (`error` None) or raised `error`."""
    if error is None:
        return context.code() or grpc.StatusCode.OK  # a handler may set a code and return
    if isinstance(error, grpc.aio.AbortError):
        return context.code() or grpc.StatusCode.UNKNOWN
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


class UnaryInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each unary handler with `wrap`; a handler that is not unary goes through `not_unary`."""

    def wrap(self, method: str, metadata: Sequence[Any], inner: Unary) -> Unary | None:
        """The handler to run instead of `inner`; None leaves the call as it is."""
        raise NotImplementedError

    def not_unary(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler | None:
        """What to do with a streaming handler (health's Watch, reflection): by default, let it through."""
        return handler

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None:
            return handler
        if handler.unary_unary is None:
            return self.not_unary(method, handler)
        wrapped = self.wrap(method, handler_call_details.invocation_metadata, handler.unary_unary)
        if wrapped is None:
            return handler
        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
