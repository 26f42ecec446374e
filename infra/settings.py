"""The settings every service reads the same way, in one place: `Common`, which each service's Config extends.

Each field has one home here and one parser (the functions below or the module that owns the variable:
infra.mongo, infra.limits, infra.ratelimit, infra.keys, infra.auth, infra.tls, infra.metrics). A service's Config
subclasses Common, gives `port` and `mongodb_database` its own defaults, says in four class attributes how it
treats tokens and TLS, and adds only the fields that are its own (reservas' saga settings).

Variables, for a service named S (usuarios, eventos, reservas):
  S_PORT                    its gRPC port (the subclass's default)
  GRPC_BIND_HOST            127.0.0.1: loopback only; 0.0.0.0 for every interface, as docker-compose sets it
  MONGODB_URI               mongodb://localhost:27017/?directConnection=true
  S_MONGODB_DATABASE        eventflow_S
  MONGODB_MAX_POOL_SIZE     4: MongoDB connections of this process (infra.mongo)
  GRPC_MAX_MESSAGE_BYTES    1 MiB: the largest request or reply (infra.limits)
  REDIS_URL                 the per-identity rate limits (and reservas' holds); none: no rate limit
  EVENTFLOW_RATE_LIMIT_<ROLE>  infra.ratelimit
  S_METRICS_PORT            Prometheus /metrics on GRPC_BIND_HOST (infra.metrics; 0: none)
  keys, without defaults    EVENTFLOW_ISSUER_PUBLIC_KEY[_FILE], EVENTFLOW_SERVICE_PUBLIC_KEY[_FILE] or
                            EVENTFLOW_SERVICE_PRIVATE_KEY[_FILE], EVENTFLOW_PAGE_TOKEN_KEY[_FILE] (infra.keys)
  EVENTFLOW_TLS_*           infra.tls (none set: plaintext)

A Config built in code (tests, embedding) takes the fields it is given and the defaults for the rest: no keys,
no TLS, no /metrics, no rate limit; `from_env` reads the environment once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from infra import tls as tls_config
from infra.auth import AuthSettings
from infra.keys import page_token_key
from infra.limits import DEFAULT_MAX_MESSAGE_BYTES, max_message_bytes
from infra.metrics import metrics_port
from infra.mongo import DEFAULT_POOL_SIZE, pool_size
from infra.ports import env_port
from infra.ratelimit import DEFAULT_LIMITS, Limits, limits_from_env

DEFAULT_MONGODB_URI = "mongodb://localhost:27017/?directConnection=true"


def env_seconds(env: Mapping[str, str], var: str, default: float) -> float:
    """A duration in seconds, more than 0, from `var`; `default` when unset or empty."""
    raw = env.get(var, "")
    if raw == "":
        return default
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{var} must be a number, got {raw!r}") from None
    if not seconds > 0:
        raise ValueError(f"{var} must be more than 0, got {raw!r}")
    return seconds


@dataclass(frozen=True)
class Common:
    """What every service is configured with. Subclasses set SERVICE and the defaults of port and database."""

    #: The service's name: its variables are <SERVICE>_PORT, <SERVICE>_MONGODB_DATABASE, <SERVICE>_METRICS_PORT.
    SERVICE: ClassVar[str] = ""
    #: Accepts reservas' servicio tokens (usuarios, eventos) / holds reservas' private key to sign its calls.
    TRUSTS_SERVICE: ClassVar[bool] = True
    SIGNS_SERVICE: ClassVar[bool] = False
    #: Under TLS: the default of EVENTFLOW_TLS_REQUIRE_CLIENT_CERT; whether it calls other services over TLS.
    REQUIRE_CLIENT_CERT: ClassVar[bool] = True
    CALLS_OUT: ClassVar[bool] = False

    port: int = 0
    bind_host: str = "127.0.0.1"
    mongodb_uri: str = DEFAULT_MONGODB_URI
    mongodb_database: str = ""
    mongodb_max_pool_size: int = DEFAULT_POOL_SIZE
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    #: REDIS_URL: where the per-identity rate limits live; empty, no rate limit (`eventflow up` always sets it).
    redis_url: str = ""
    #: EVENTFLOW_RATE_LIMIT_<ROLE> (infra/ratelimit.py): calls per identity, kept in Redis.
    rate_limits: Limits = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    #: The deployment's page-token key; no default (create_app refuses to build a server without one).
    page_token_key: bytes = field(default=b"", repr=False)
    #: The keys it verifies tokens with (and reservas signs with); None only in a Config not built from the environment.
    auth: AuthSettings | None = field(default=None, compare=False, repr=False)
    tls: tls_config.TLSConfig | None = None
    #: <SERVICE>_METRICS_PORT (infra.metrics): where /metrics is served, on bind_host; 0: not served. From the
    #: environment the default is infra.metrics.DEFAULT_PORTS; a Config built in code serves none unless told.
    metrics_port: int = 0

    @property
    def address(self) -> str:
        return f"{self.bind_host}:{self.port}"

    @classmethod
    def common_from_env(cls, env: Mapping[str, str], *, keys: bool = True) -> dict[str, Any]:
        """The common fields as the environment gives them; `keys=False` for tools that only reach the store (no
        auth, no page tokens, no TLS)."""
        name = cls.SERVICE.upper()
        return {
            "port": env_port(env, f"{name}_PORT", cls.port),
            "bind_host": env.get("GRPC_BIND_HOST") or cls.bind_host,
            "mongodb_uri": env.get("MONGODB_URI") or cls.mongodb_uri,
            "mongodb_database": env.get(f"{name}_MONGODB_DATABASE") or cls.mongodb_database,
            "mongodb_max_pool_size": pool_size(env),
            "max_message_bytes": max_message_bytes(env),
            "redis_url": env.get("REDIS_URL") or cls.redis_url,
            "rate_limits": limits_from_env(env),
            "auth": (
                AuthSettings.from_env(env, trusts_service=cls.TRUSTS_SERVICE, signs_service=cls.SIGNS_SERVICE)
                if keys
                else None
            ),
            "tls": (
                tls_config.from_env(env, require_client_cert=cls.REQUIRE_CLIENT_CERT, calls_out=cls.CALLS_OUT)
                if keys
                else None
            ),
            "page_token_key": page_token_key(env) if keys else b"",
            "metrics_port": metrics_port(env, cls.SERVICE),
        }

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, *, keys: bool = True) -> Self:
        """The configuration the environment gives (read once, at start)."""
        return cls(**cls.common_from_env(env, keys=keys))
