"""Builds the usuarios gRPC server: the servicer on one MongoDB client, health, reflection, shutdown.

`create_app(config)` wires everything and returns a GrpcApp, not started; nothing connects
before the health check runs. Health is SERVING while MongoDB answers a ping; the indexes are made (setup)
before anything is served, so a server started before its database becomes SERVING later instead of
crashing. `serve(config)` runs it until SIGTERM or SIGINT, then stops gracefully.
"""

from __future__ import annotations

import logging

from eventflow.usuarios.v1 import usuarios_pb2_grpc
from infra import tls
from infra.limits import ReplyBudget
from infra.metrics import Metrics
from infra.mongo import create_client, ping
from infra.pagination import PageTokens
from infra.ratelimit import limiter_for
from infra.server import GrpcApp, ServiceBinding, create_server
from usuarios.config import Config
from usuarios.repository import UsuarioRepository
from usuarios.service import UsuariosService
from usuarios.servicer import DOMAIN, ERROR_TABLE, FULL_NAME, UsuariosServicer, to_proto

log = logging.getLogger(__name__)


async def create_app(config: Config) -> GrpcApp:
    tokens = PageTokens(config.page_token_key)  # before anything is built: no key, no server
    client = create_client(config.mongodb_uri, app_name="usuarios", max_pool_size=config.mongodb_max_pool_size)
    db = client[config.mongodb_database]
    repository = UsuarioRepository(db)
    budget = ReplyBudget.of_messages(config.max_message_bytes, to_proto)
    servicer = UsuariosServicer(UsuariosService(repository, tokens, budget))

    async def health_check() -> bool:
        return await ping(db)

    async def setup() -> None:
        await repository.ensure_indexes()  # before the first write: uniqueness holds from it

    limiter = limiter_for(config.redis_url, config.rate_limits)
    try:
        app = await create_server(
            bindings=[ServiceBinding(FULL_NAME, usuarios_pb2_grpc.add_UsuariosServiceServicer_to_server, servicer)],
            address=config.address,
            domain=DOMAIN,
            health_check=health_check,
            setup=setup,
            error_table=ERROR_TABLE,
            max_message_bytes=config.max_message_bytes,
            auth=config.auth,
            limiter=limiter,
            credentials=tls.server_credentials(config.tls),
            metrics=Metrics("usuarios", host=config.bind_host, port=config.metrics_port),
        )
    except BaseException:
        await client.close()
        raise
    app.on_stop.append(client.close)
    if limiter is not None:
        app.on_stop.append(limiter.close)
    return app


async def serve(config: Config) -> None:
    app = await create_app(config)
    await app.run_until_signal()
