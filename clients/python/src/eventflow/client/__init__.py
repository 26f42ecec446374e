"""The Python client of EventFlow: ``pip install eventflow-client`` (clients/python in the repository).

    import os
    from eventflow.client import SoldOut, connect
    from eventflow.reservas.v1 import reservas_pb2

    with connect(token=os.environ["TOKEN"]) as ef:
        try:
            reserva = ef.reservas.Reservar(reservas_pb2.ReservarRequest(
                usuario_id=..., evento_id=..., cantidad=2, medio_pago="tok_visa", idempotency_key="compra-001"))
        except SoldOut as error:
            print("sold out:", error.message)

- :func:`connect` (sync) and :func:`connect_async` (grpc.aio) open one channel per service and answer the
  generated stubs as ``.usuarios``, ``.eventos``, ``.reservas``. Every call carries the token, has a deadline
  (10 s unless the call names one: ``timeout=``) and is retried by gRPC on UNAVAILABLE (service config).
- A failed call raises an :class:`EventFlowError` subclass: by ErrorInfo reason where a program acts on it
  (:class:`SoldOut`, :class:`SeatTaken`, :class:`PaymentDeclined`, ...), else by status code
  (:class:`NotFound`, :class:`InvalidArgument`, ...), with ``code()``, ``message``, ``reason``, ``metadata``.
- ``Reservar`` answers once the purchase has settled: a CONFIRMADA reservation, or it raises the error the
  purchase failed with (its ``reserva_id`` is in the error's metadata). Only GetReserva and ListReservas show
  FALLIDA reservations, with ``motivo`` saying why.
- The messages are those of ``eventflow.<service>.v1`` (``usuarios_pb2``, ``eventos_pb2``, ``reservas_pb2``);
  :func:`timestamp`, :func:`to_datetime`, :func:`name` and :func:`value` convert dates and enum names.
"""

from eventflow.client.connection import (
    DEFAULT_TIMEOUT,
    AsyncEventFlow,
    EventFlow,
    connect,
    connect_async,
    service_config,
    tls_credentials,
)
from eventflow.client.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    EventFlowError,
    EventPast,
    FailedPrecondition,
    IdempotencyKeyReused,
    Internal,
    InvalidArgument,
    LimitPerBuyerExceeded,
    NotCancellable,
    NotFound,
    PaymentDeclined,
    PaymentTimeout,
    PermissionDenied,
    ResourceExhausted,
    SeatTaken,
    SoldOut,
    Unauthenticated,
    Unavailable,
    from_rpc_error,
)
from eventflow.client.values import name, timestamp, to_datetime, value

__all__ = [
    "DEFAULT_TIMEOUT",
    "Aborted",
    "AlreadyExists",
    "AsyncEventFlow",
    "DeadlineExceeded",
    "EventFlow",
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
    "connect",
    "connect_async",
    "from_rpc_error",
    "name",
    "service_config",
    "timestamp",
    "tls_credentials",
    "to_datetime",
    "value",
]
