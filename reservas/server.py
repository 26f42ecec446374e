"""Builds the reservas gRPC server and everything the saga needs, once per process.

One MongoDB client, one Redis client, one channel per dependency (usuarios, eventos), all
created here and closed on stop; nothing connects before the server runs. Health is SERVING
while MongoDB AND Redis answer. Setup, once they first do and before anything is served: the indexes
are ensured, the idempotency keys an earlier version stored are moved to the saga leases
(LeaseStore.migrate_legacy_keys), and the recovery loop and the projector start (so recovery runs
"on startup", as soon as the stores are reachable).
Under TLS (config.tls) the channels are TLS too, presenting reservas' client certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid

from redis.exceptions import RedisError

from eventflow.reservas.v1 import reservas_pb2_grpc
from infra import tls
from infra.limits import ReplyBudget, message_options
from infra.metrics import Metrics
from infra.mongo import create_client, ping
from infra.pagination import PageTokens
from infra.ratelimit import RateLimiter
from infra.redis_client import connect as redis_connect
from infra.server import GrpcApp, ServiceBinding, create_server
from reservas.clients import EventosClient, UsuariosClient
from reservas.config import Config
from reservas.event_store import EventStore
from reservas.gate import AdmissionGate
from reservas.gate import connect as gate_client
from reservas.holds import HoldStore
from reservas.leases import LeaseStore
from reservas.mapping import event_to_pb, reserva_to_pb
from reservas.metrics import ReservasMetrics
from reservas.payments import SimulatedGateway
from reservas.projections.metrics import ProjectorCollector
from reservas.projections.projector import Projector
from reservas.projections.queries import ReservasQueries
from reservas.recovery import Recovery
from reservas.saga.base import SagaDeps
from reservas.saga.chain import build_saga
from reservas.saga.driver import Driver
from reservas.service import ReservasService
from reservas.servicer import DOMAIN, ERROR_TABLE, FULL_NAME, ReservasServicer

log = logging.getLogger(__name__)

#: A dependency that comes back is reached again within seconds, not after gRPC's default 2-minute backoff cap.
CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 3000)]


def lease_owner() -> str:
    """This process, as a lease holder: host:pid:random (a restarted process is a new owner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def create_app(config: Config) -> GrpcApp:
    """Everything wired, nothing started or connected yet."""
    tokens = PageTokens(config.page_token_key)  # before anything is built: no key, no server
    mongo = create_client(config.mongodb_uri, "reservas", max_pool_size=config.mongodb_max_pool_size)
    db = mongo[config.mongodb_database]
    # Holds: a pool larger than the purchases in flight (redis-py's default of 100 would refuse the rest), and
    # the retry of a stale connection (after Redis restarts, each pooled connection fails its next command once).
    redis_client = redis_connect(config.redis_url, timeout_seconds=2, max_connections=1024)
    metrics = Metrics("reservas", host=config.bind_host, port=config.metrics_port)
    own_metrics = ReservasMetrics(metrics.registry)
    gate_redis = gate_client(config.redis_url)  # short timeouts: without an answer, no gate
    gate = AdmissionGate(gate_redis, refresh_seconds=config.gate_refresh_seconds, metrics=own_metrics)
    limiter = RateLimiter(gate_redis, config.rate_limits)  # the gate's client: short timeouts, a large pool
    if config.auth is None or config.auth.service_token is None:
        raise ValueError("reservas: no key to sign its calls to usuarios and eventos with (see infra/keys.py)")
    # Under TLS: verified against the deployment's CA, presenting reservas' client certificate (mutual TLS).
    client_tls = config.tls.client if config.tls is not None else None
    channel_options = [*CHANNEL_OPTIONS, *message_options(config.max_message_bytes)]
    usuarios_channel = tls.aio_channel(config.usuarios_addr, client_tls, channel_options)
    eventos_channel = tls.aio_channel(config.eventos_addr, client_tls, channel_options)

    store = EventStore(db)
    leases = LeaseStore(db, lease_owner(), ttl_seconds=config.lease_seconds)
    payments = SimulatedGateway(
        db, slow_seconds=config.payment_slow_seconds, timeout_seconds=config.payment_timeout_seconds
    )
    deps = SagaDeps(
        # reservas calls the other two as itself: its own short-lived servicio token on every call.
        usuarios=UsuariosClient(usuarios_channel, timeout=config.call_timeout_seconds, token=config.auth.service_token),
        eventos=EventosClient(eventos_channel, timeout=config.call_timeout_seconds, token=config.auth.service_token),
        holds=HoldStore(redis_client, ttl_ms=int(config.hold_ttl_seconds * 1000)),
        payments=payments,
        store=store,
        gate=gate,
        metrics=own_metrics,
    )
    saga = build_saga()
    driver = Driver(deps, leases, lease_seconds=config.lease_seconds)
    own_metrics.track_open_sagas(lambda: len(driver.active), driver.oldest_seconds)
    # The read models' projector (EVENTFLOW_PROJECTOR), started once the stores answer.
    projector = Projector(db) if config.projector == "embedded" else None
    if projector is not None:
        metrics.registry.register(ProjectorCollector(projector))
    recovery = Recovery(driver, leases, saga, interval=config.recovery_interval_seconds)
    service = ReservasService(
        store=store,
        keys=leases,
        driver=driver,
        saga=saga,
        eventos=deps.eventos,
        payments=payments,
        gate=gate,
        tokens=tokens,
        historial_budget=ReplyBudget.of_messages(config.max_message_bytes, event_to_pb),
        wait_seconds=config.reservar_wait_seconds,
    )
    background: list[asyncio.Task[None]] = []
    budget = ReplyBudget.of_messages(config.max_message_bytes, reserva_to_pb)  # a page of ListReservas, in bytes
    redis_failure: list[str] = []  # the cause last logged: one line per cause (a wrong password, no server)

    async def health_check() -> bool:
        if not await ping(db):
            return False
        try:
            await redis_client.ping()
        except (RedisError, OSError) as error:
            cause = f"{type(error).__name__}: {error}"
            if redis_failure != [cause]:
                redis_failure[:] = [cause]
                log.warning("Redis does not answer", extra={"error": cause})
            return False
        redis_failure.clear()
        return True

    async def setup() -> None:
        for indexed in (store, leases, payments):
            await indexed.ensure_indexes()
        # Before serving and before recovery: a repeat of a pre-upgrade purchase must find its key.
        await leases.migrate_legacy_keys()
        background.append(asyncio.create_task(recovery.run_forever(), name="recovery"))
        if projector is not None:
            background.append(asyncio.create_task(projector.run(), name="projector"))

    try:
        app = await create_server(
            bindings=[
                ServiceBinding(
                    FULL_NAME,
                    reservas_pb2_grpc.add_ReservasServiceServicer_to_server,
                    ReservasServicer(service, ReservasQueries(db, tokens, budget)),
                )
            ],
            address=config.address,
            domain=DOMAIN,
            health_check=health_check,
            setup=setup,
            error_table=ERROR_TABLE,
            max_message_bytes=config.max_message_bytes,
            auth=config.auth,
            owner_of=store.owner,
            limiter=limiter,
            credentials=tls.server_credentials(config.tls),
            metrics=metrics,
        )
    except BaseException:
        await mongo.close()
        raise

    async def close() -> None:
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await driver.shutdown(grace=5.0)
        await usuarios_channel.close()
        await eventos_channel.close()
        await redis_client.aclose()
        await gate_redis.aclose()
        await mongo.close()

    app.on_stop.append(close)
    return app


async def serve(config: Config) -> None:
    app = await create_app(config)
    await app.run_until_signal()
