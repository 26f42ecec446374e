"""reservas configuration: the settings every service shares (infra.settings: RESERVAS_PORT 50053,
RESERVAS_MONGODB_DATABASE "eventflow_reservas", RESERVAS_METRICS_PORT 9453, and REDIS_URL, here
"redis://localhost:6379/0" by default), and its own: USUARIOS_ADDR ("localhost:50051"), EVENTOS_ADDR ("localhost:50052"),
EVENTFLOW_HOLD_TTL_SECONDS (600), EVENTFLOW_PAYMENT_SLOW_SECONDS (3),
EVENTFLOW_PAYMENT_TIMEOUT_SECONDS (2), EVENTFLOW_RECOVERY_INTERVAL_SECONDS (2), EVENTFLOW_LEASE_SECONDS (15),
EVENTFLOW_CALL_TIMEOUT_SECONDS (2: deadline of each call to usuarios/eventos), EVENTFLOW_RESERVAR_WAIT_SECONDS
(120: the ceiling of how long Reservar/CancelarReserva wait for the saga: the caller's deadline, never more
than this, and this when the caller sets none),
EVENTFLOW_GATE_REFRESH_SECONDS (2: how often the admission gate re-reads an event's inventory from eventos,
so changes made outside the saga reach it).
EVENTFLOW_PROJECTOR (embedded: the read models' projector runs in this process; off: it runs elsewhere,
as `eventflow projector`). EVENTFLOW_FAULT (fault injection) is read by reservas.faults itself.
GRPC_MAX_MESSAGE_BYTES applies also on its channels to usuarios and eventos.
Keys, without defaults (infra/keys.py): EVENTFLOW_ISSUER_PUBLIC_KEY[_FILE] (verifies callers' tokens),
EVENTFLOW_SERVICE_PRIVATE_KEY[_FILE] (signs reservas' own calls to usuarios and eventos),
EVENTFLOW_PAGE_TOKEN_KEY[_FILE] (the key of page tokens).
TLS: the EVENTFLOW_TLS_* variables of infra.tls (none set: plaintext); under TLS reservas calls usuarios and
eventos over TLS too, presenting EVENTFLOW_TLS_CLIENT_CERT_FILE, and requires no client certificate itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Self

from infra.settings import Common, env_seconds

#: The longest Reservar and CancelarReserva wait for the saga (EVENTFLOW_RESERVAR_WAIT_SECONDS).
DEFAULT_RESERVAR_WAIT_SECONDS = 120.0


@dataclass(frozen=True)
class Config(Common):
    SERVICE: ClassVar[str] = "reservas"
    TRUSTS_SERVICE: ClassVar[bool] = False
    SIGNS_SERVICE: ClassVar[bool] = True
    REQUIRE_CLIENT_CERT: ClassVar[bool] = False
    CALLS_OUT: ClassVar[bool] = True
    #: Its own settings, each a number of seconds, and the variable it is read from.
    SECONDS: ClassVar[dict[str, str]] = {
        "hold_ttl_seconds": "EVENTFLOW_HOLD_TTL_SECONDS",
        "payment_slow_seconds": "EVENTFLOW_PAYMENT_SLOW_SECONDS",
        "payment_timeout_seconds": "EVENTFLOW_PAYMENT_TIMEOUT_SECONDS",
        "recovery_interval_seconds": "EVENTFLOW_RECOVERY_INTERVAL_SECONDS",
        "lease_seconds": "EVENTFLOW_LEASE_SECONDS",
        "call_timeout_seconds": "EVENTFLOW_CALL_TIMEOUT_SECONDS",
        "reservar_wait_seconds": "EVENTFLOW_RESERVAR_WAIT_SECONDS",
        "gate_refresh_seconds": "EVENTFLOW_GATE_REFRESH_SECONDS",
    }

    port: int = 50053
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
    reservar_wait_seconds: float = DEFAULT_RESERVAR_WAIT_SECONDS
    gate_refresh_seconds: float = 2.0
    projector: str = "embedded"

    def __post_init__(self) -> None:
        if self.projector not in ("embedded", "off"):
            raise ValueError(f"EVENTFLOW_PROJECTOR must be embedded or off, got {self.projector!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, *, keys: bool = True) -> Self:
        """The configuration the environment gives; `keys=False` for tools that only reach the store (no auth, no
        page tokens)."""
        values = cls.common_from_env(env, keys=keys)
        values["usuarios_addr"] = env.get("USUARIOS_ADDR") or cls.usuarios_addr
        values["eventos_addr"] = env.get("EVENTOS_ADDR") or cls.eventos_addr
        values["projector"] = env.get("EVENTFLOW_PROJECTOR") or cls.projector
        for name, var in cls.SECONDS.items():
            values[name] = env_seconds(env, var, getattr(cls, name))
        return cls(**values)
