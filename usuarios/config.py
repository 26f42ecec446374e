"""Configuration of the usuarios server, from environment variables with localhost defaults.

USUARIOS_PORT (50051), GRPC_BIND_HOST ("127.0.0.1": loopback only; "0.0.0.0" for every interface, as
docker-compose sets it), MONGODB_URI ("mongodb://localhost:27017/?directConnection=true"),
USUARIOS_MONGODB_DATABASE ("eventflow_usuarios"), MONGODB_MAX_POOL_SIZE (4: MongoDB connections of this process).
TLS: the EVENTFLOW_TLS_* variables of infra.tls (none set: plaintext; under TLS callers must present a client
certificate unless EVENTFLOW_TLS_REQUIRE_CLIENT_CERT=false).
GRPC_MAX_MESSAGE_BYTES (1 MiB: the largest request or reply, see infra.limits).
USUARIOS_METRICS_PORT (9451: Prometheus /metrics on GRPC_BIND_HOST; 0: none; see infra.metrics).
Keys, without defaults (infra/keys.py): EVENTFLOW_ISSUER_PUBLIC_KEY[_FILE], EVENTFLOW_SERVICE_PUBLIC_KEY[_FILE],
EVENTFLOW_PAGE_TOKEN_KEY[_FILE] (the key of page tokens).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from infra import tls as tls_config
from infra.auth import AuthSettings
from infra.keys import page_token_key
from infra.limits import DEFAULT_MAX_MESSAGE_BYTES, max_message_bytes
from infra.metrics import metrics_port
from infra.mongo import DEFAULT_POOL_SIZE, pool_size
from infra.ratelimit import DEFAULT_LIMITS, Limits, limits_from_env


@dataclass(frozen=True)
class Config:
    port: int = 50051
    bind_host: str = "127.0.0.1"
    mongodb_uri: str = "mongodb://localhost:27017/?directConnection=true"
    mongodb_database: str = "eventflow_usuarios"
    mongodb_max_pool_size: int = DEFAULT_POOL_SIZE
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    #: The deployment's page-token key; no default (create_app refuses to build a server without one).
    page_token_key: bytes = field(default=b"", repr=False)
    #: REDIS_URL: where the per-identity rate limits live; empty, no rate limit (`eventflow up` always sets it).
    redis_url: str = ""
    #: EVENTFLOW_RATE_LIMIT_<ROLE> (infra/ratelimit.py).
    rate_limits: Limits = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    #: The keys it verifies tokens with (infra/auth.py); None only in a Config not built from the environment.
    auth: AuthSettings | None = field(default=None, compare=False, repr=False)
    tls: tls_config.TLSConfig | None = None
    #: <SERVICE>_METRICS_PORT (infra.metrics): where /metrics is served, on bind_host; 0: not served. From the
    #: environment the default is 9451; a Config built in code (tests, embedding) serves none unless told.
    metrics_port: int = 0

    @property
    def address(self) -> str:
        return f"{self.bind_host}:{self.port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Config:
        defaults = cls()
        raw_port = env.get("USUARIOS_PORT", str(defaults.port))
        try:
            port = int(raw_port)
            if not 0 <= port <= 65535:
                raise ValueError
        except ValueError:
            raise ValueError(f"USUARIOS_PORT must be a port number (0-65535), got {raw_port!r}") from None
        return cls(
            port=port,
            bind_host=env.get("GRPC_BIND_HOST", defaults.bind_host),
            mongodb_uri=env.get("MONGODB_URI", defaults.mongodb_uri),
            mongodb_max_pool_size=pool_size(env),
            mongodb_database=env.get("USUARIOS_MONGODB_DATABASE", defaults.mongodb_database),
            max_message_bytes=max_message_bytes(env),
            redis_url=env.get("REDIS_URL", ""),
            rate_limits=limits_from_env(env),
            auth=AuthSettings.from_env(env, trusts_service=True, signs_service=False),
            tls=tls_config.from_env(env, require_client_cert=True),
            page_token_key=page_token_key(env),
            metrics_port=metrics_port(env, "usuarios"),
        )
