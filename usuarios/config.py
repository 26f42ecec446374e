"""Configuration of the usuarios server: the settings every service shares (infra.settings), on port 50051 with
the database eventflow_usuarios (USUARIOS_PORT, USUARIOS_MONGODB_DATABASE, USUARIOS_METRICS_PORT: 9451).

It trusts reservas' servicio tokens (EVENTFLOW_SERVICE_PUBLIC_KEY[_FILE]); under TLS callers must present a
client certificate unless EVENTFLOW_TLS_REQUIRE_CLIENT_CERT=false.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from infra.settings import Common


@dataclass(frozen=True)
class Config(Common):
    SERVICE: ClassVar[str] = "usuarios"

    port: int = 50051
    mongodb_database: str = "eventflow_usuarios"
