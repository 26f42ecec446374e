"""Builds the eventos gRPC server: one MongoDB client, health, reflection, error mapping."""

from __future__ import annotations

import logging

from eventflow.eventos.v1 import eventos_pb2_grpc
from eventos.config import Config
from eventos.repository import EventoRepository
from eventos.service import EventoService
from eventos.servicer import DOMAIN, FULL_NAME, EventosServicer, to_asiento, to_proto
from infra import tls
from infra.limits import ReplyBudget
from infra.metrics import Metrics
from infra.mongo import create_client, ping
from infra.pagination import PageTokens
from infra.ratelimit import limiter_for
from infra.server import GrpcApp, ServiceBinding, create_server

log = logging.getLogger(__name__)


async def create_app(config: Config) -> GrpcApp:
    """Everything wired, nothing started or connected yet."""
    tokens = PageTokens(config.page_token_key)  # before anything is built: no key, no server
    client = create_client(config.mongodb_uri, "eventos", max_pool_size=config.mongodb_max_pool_size)
    db = client[config.mongodb_database]
    repository = EventoRepository(db)

    async def health_check() -> bool:
        return await ping(db)

    async def setup() -> None:
        # Before anything is served, once MongoDB answers: the indexes, the events an earlier version stored
        # moved to the current shape, the transactions a killed eventos left open ended (eventos.sessions).
        await repository.ensure_indexes()
        await repository.migrate_legacy()
        await repository.sessions.start()

    budget = ReplyBudget.of_messages(config.max_message_bytes, to_proto)  # a page of events, in bytes
    seat_budget = ReplyBudget.of_messages(config.max_message_bytes, to_asiento)  # a page of seats
    limiter = limiter_for(config.redis_url, config.rate_limits)
    try:
        app = await create_server(
            bindings=[
                ServiceBinding(
                    FULL_NAME,
                    eventos_pb2_grpc.add_EventosServiceServicer_to_server,
                    EventosServicer(EventoService(repository, tokens, budget, seat_budget), budget.limit),
                )
            ],
            address=config.address,
            domain=DOMAIN,
            health_check=health_check,
            setup=setup,
            max_message_bytes=config.max_message_bytes,
            auth=config.auth,
            limiter=limiter,
            credentials=tls.server_credentials(config.tls),
            metrics=Metrics("eventos", host=config.bind_host, port=config.metrics_port),
        )
    except BaseException:
        await client.close()
        raise
    app.on_stop.append(client.close)
    if limiter is not None:
        app.on_stop.append(limiter.close)
    app.on_stop.append(repository.close)  # run first (newest first): takes in flight abort their transactions

    return app


async def serve(config: Config) -> None:
    app = await create_app(config)
    await app.run_until_signal()
