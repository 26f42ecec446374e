"""Configuration of the eventos server: the settings every service shares (infra.settings), on port 50052 with
the database eventflow_eventos (EVENTOS_PORT, EVENTOS_MONGODB_DATABASE, EVENTOS_METRICS_PORT: 9452).

It trusts reservas' servicio tokens (EVENTFLOW_SERVICE_PUBLIC_KEY[_FILE]); under TLS callers must present a
client certificate unless EVENTFLOW_TLS_REQUIRE_CLIENT_CERT=false.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from infra.settings import Common


@dataclass(frozen=True)
class Config(Common):
    SERVICE: ClassVar[str] = "eventos"

    port: int = 50052
    mongodb_database: str = "eventflow_eventos"
