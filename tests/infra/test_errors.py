"""The error contract: domain exceptions become rich statuses; surprises never leak a stack trace."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from infra.errors import ErrorMappingInterceptor, FailedPrecondition, InvalidArgument, error_info
from callers import open_channel


class _Boom(health_pb2_grpc.HealthServicer):
    """A servicer whose Check raises whatever the request's service name says."""

    async def Check(self, request, context):  # noqa: N802 - generated name
        if request.service == "invalid":
            raise InvalidArgument("email must contain @", metadata={"field": "email"})
        if request.service == "sold-out":
            raise FailedPrecondition("only 2 tickets left", reason="SOLD_OUT", metadata={"disponibles": 2})
        if request.service.startswith("huge"):
            raise InvalidArgument(f"unknown thing {request.service!r}", metadata={"field": "service", "value": request.service})
        if request.service == "bug":
            raise KeyError("secret internal detail")
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


@pytest.fixture
async def stub() -> AsyncIterator[health_pb2_grpc.HealthStub]:
    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor("test.eventflow")])
    health_pb2_grpc.add_HealthServicer_to_server(_Boom(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with open_channel(f"127.0.0.1:{port}") as channel:
        yield health_pb2_grpc.HealthStub(channel)
    await server.stop(0)


async def _fail(stub: health_pb2_grpc.HealthStub, service: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Check(health_pb2.HealthCheckRequest(service=service))
    return caught.value


async def test_domain_error_becomes_status_with_error_info(stub) -> None:
    error = await _fail(stub, "invalid")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "email must contain @"
    info = error_info(error)
    assert info is not None
    assert (info.reason, info.domain, dict(info.metadata)) == ("VALIDATION_FAILED", "test.eventflow", {"field": "email"})


async def test_reason_and_metadata_travel(stub) -> None:
    error = await _fail(stub, "sold-out")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(error)
    assert info.reason == "SOLD_OUT" and info.metadata["disponibles"] == "2"


async def test_unexpected_error_is_internal_without_details(stub) -> None:
    error = await _fail(stub, "bug")
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in error.details() and "Traceback" not in error.details()


async def test_success_passes_through(stub) -> None:
    reply = await stub.Check(health_pb2.HealthCheckRequest(service="ok"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_huge_bad_value_is_not_echoed_whole(stub: health_pb2_grpc.HealthStub) -> None:
    """A 1 MB value copied into the message and the ErrorInfo would not fit gRPC's header limits: the client
    would get RESOURCE_EXHAUSTED instead of the status the call deserves. Only a short prefix is echoed."""
    error = await _fail(stub, "huge" + "x" * 1_000_000)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("unknown thing 'hugexxx") and len(error.details()) < 1_000
    info = error_info(error)
    assert info is not None and info.metadata["field"] == "service"
    assert info.metadata["value"].startswith("hugexxx") and len(info.metadata["value"]) < 300
