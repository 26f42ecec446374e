"""reservas configuration: environment variables with localhost defaults.

RESERVAS_PORT (50053), GRPC_BIND_HOST ("127.0.0.1": loopback only; "0.0.0.0" for every interface, as
docker-compose sets it), MONGODB_URI, RESERVAS_MONGODB_DATABASE ("eventflow_reservas"), REDIS_URL
("redis://localhost:6379/0"), USUARIOS_ADDR ("localhost:50051"), EVENTOS_ADDR ("localhost:50052"),
EVENTFLOW_HOLD_TTL_SECONDS (600), EVENTFLOW_PAYMENT_SLOW_SECONDS (3),
EVENTFLOW_PAYMENT_TIMEOUT_SECONDS (2), EVENTFLOW_RECOVERY_INTERVAL_SECONDS (2), EVENTFLOW_LEASE_SECONDS (15),
EVENTFLOW_CALL_TIMEOUT_SECONDS (2: deadline of each call to usuarios/eventos), EVENTFLOW_RESERVAR_WAIT_SECONDS
(120: the ceiling of how long Reservar/CancelarReserva wait for the saga: the caller's deadline, never more
than this, and this when the caller sets none),
EVENTFLOW_GATE_REFRESH_SECONDS (2: how often the admission gate re-reads an event's inventory from eventos,
so changes made outside the saga reach it), MONGODB_MAX_POOL_SIZE (4: MongoDB connections of this process).
EVENTFLOW_PROJECTOR (embedded: the read models' projector runs in this process; off: it runs elsewhere,
as `eventflow projector`). EVENTFLOW_FAULT (fault injection) is read by reservas.faults itself.
GRPC_MAX_MESSAGE_BYTES (1 MiB: the largest request or reply, also on its channels to usuarios and eventos).
RESERVAS_METRICS_PORT (9453: Prometheus /metrics on GRPC_BIND_HOST; 0: none; see infra.metrics).
Keys, without defaults (infra/keys.py): EVENTFLOW_ISSUER_PUBLIC_KEY[_FILE] (verifies callers' tokens),
EVENTFLOW_SERVICE_PRIVATE_KEY[_FILE] (signs reservas' own calls to usuarios and eventos),
EVENTFLOW_PAGE_TOKEN_KEY[_FILE] (the key of page tokens).
TLS: the EVENTFLOW_TLS_* variables of infra.tls (none set: plaintext); under TLS reservas calls usuarios and
eventos over TLS too, presenting EVENTFLOW_TLS_CLIENT_CERT_FILE, and requires no client certificate itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from infra import tls as tls_config
from infra.auth import AuthSettings
from infra.keys import page_token_key
from infra.limits import DEFAULT_MAX_MESSAGE_BYTES, max_message_bytes
from infra.metrics import metrics_port
from infra.mongo import DEFAULT_POOL_SIZE, pool_size
from infra.ratelimit import DEFAULT_LIMITS, Limits, limits_from_env


@dataclass(frozen=True)
class Config:
    port: int = 50053
    bind_host: str = "127.0.0.1"
    mongodb_uri: str = "mongodb://localhost:27017/?directConnection=true"
    mongodb_database: str = "eventflow_reservas"
    redis_url: str = "redis://localhost:6379/0"
    usuarios_addr: str = "localhost:50051"
    eventos_addr: str = "localhost:50052"
    hold_ttl_seconds: float = 600.0
    payment_slow_seconds: float = 3.0
    payment_timeout_seconds: float = 2.0
    recovery_interval_seconds: float = 2.0
    lease_seconds: float = 15.0
    call_timeout_seconds: float = 2.0
    reservar_wait_seconds: float = 120.0
    gate_refresh_seconds: float = 2.0
    mongodb_max_pool_size: int = DEFAULT_POOL_SIZE
    projector: str = "embedded"
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    #: The deployment's page-token key; no default (create_app refuses to build a server without one).
    page_token_key: bytes = field(default=b"", repr=False)
    #: EVENTFLOW_RATE_LIMIT_<ROLE> (infra/ratelimit.py): calls per identity, kept in Redis.
    rate_limits: Limits = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    #: The keys it verifies tokens with and signs its own calls with; None only in a Config not built from the environment.
    auth: AuthSettings | None = field(default=None, compare=False, repr=False)
    tls: tls_config.TLSConfig | None = None
    #: <SERVICE>_METRICS_PORT (infra.metrics): where /metrics is served, on bind_host; 0: not served. From the
    #: environment the default is 9453; a Config built in code (tests, embedding) serves none unless told.
    metrics_port: int = 0

    def __post_init__(self) -> None:
        if self.projector not in ("embedded", "off"):
            raise ValueError(f"EVENTFLOW_PROJECTOR must be embedded or off, got {self.projector!r}")

    @property
    def address(self) -> str:
        return f"{self.bind_host}:{self.port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, *, keys: bool = True) -> Config:
        """The configuration the environment gives; `keys=False` for tools that only reach the store (no auth, no
        page tokens)."""
        names = {
            "port": "RESERVAS_PORT",
            "bind_host": "GRPC_BIND_HOST",
            "mongodb_uri": "MONGODB_URI",
            "mongodb_database": "RESERVAS_MONGODB_DATABASE",
            "redis_url": "REDIS_URL",
            "usuarios_addr": "USUARIOS_ADDR",
            "eventos_addr": "EVENTOS_ADDR",
            "hold_ttl_seconds": "EVENTFLOW_HOLD_TTL_SECONDS",
            "payment_slow_seconds": "EVENTFLOW_PAYMENT_SLOW_SECONDS",
            "payment_timeout_seconds": "EVENTFLOW_PAYMENT_TIMEOUT_SECONDS",
            "recovery_interval_seconds": "EVENTFLOW_RECOVERY_INTERVAL_SECONDS",
            "lease_seconds": "EVENTFLOW_LEASE_SECONDS",
            "call_timeout_seconds": "EVENTFLOW_CALL_TIMEOUT_SECONDS",
            "reservar_wait_seconds": "EVENTFLOW_RESERVAR_WAIT_SECONDS",
            "gate_refresh_seconds": "EVENTFLOW_GATE_REFRESH_SECONDS",
            "mongodb_max_pool_size": "MONGODB_MAX_POOL_SIZE",
            "projector": "EVENTFLOW_PROJECTOR",
        }
        values: dict[str, object] = {
            "mongodb_max_pool_size": pool_size(env),
            "max_message_bytes": max_message_bytes(env),
            "rate_limits": limits_from_env(env),
            "auth": AuthSettings.from_env(env, trusts_service=False, signs_service=True) if keys else None,
            "tls": tls_config.from_env(env, require_client_cert=False, calls_out=True) if keys else None,
            "page_token_key": page_token_key(env) if keys else b"",
            "metrics_port": metrics_port(env, "reservas"),
        }
        for f in fields(cls):
            if f.name in values:
                continue
            var = names[f.name]
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            if f.type == "str":
                values[f.name] = raw
                continue
            try:
                number = int(raw) if f.type == "int" else float(raw)
            except ValueError:
                raise ValueError(f"{var} must be a number, got {raw!r}") from None
            if f.name == "port" and not 0 <= number <= 65535:
                raise ValueError(f"{var} must be a port number (0-65535), got {raw!r}")
            if f.type == "float" and number <= 0:
                raise ValueError(f"{var} must be more than 0, got {raw!r}")
            values[f.name] = number
        return cls(**values)  # type: ignore[arg-type]
