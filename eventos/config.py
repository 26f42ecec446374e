"""eventos configuration: environment variables with localhost defaults (MONGODB_MAX_POOL_SIZE: 4 connections).

GRPC_MAX_MESSAGE_BYTES (1 MiB: the largest request or reply, see infra.limits).
EVENTFLOW_PAGE_TOKEN_KEY or EVENTFLOW_PAGE_TOKEN_KEY_FILE is required (no default: the key of page tokens).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from infra.keys import page_token_key
from infra.limits import DEFAULT_MAX_MESSAGE_BYTES, max_message_bytes
from infra.mongo import DEFAULT_POOL_SIZE, pool_size


@dataclass(frozen=True)
class Config:
    port: int = 50052
    bind_host: str = "[::]"
    mongodb_uri: str = "mongodb://localhost:27017/?directConnection=true"
    mongodb_database: str = "eventflow_eventos"
    mongodb_max_pool_size: int = DEFAULT_POOL_SIZE
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    #: The deployment's page-token key; no default (create_app refuses to build a server without one).
    page_token_key: bytes = field(default=b"", repr=False)

    @property
    def address(self) -> str:
        return f"{self.bind_host}:{self.port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Config:
        return cls(
            port=int(env.get("EVENTOS_PORT", cls.port)),
            bind_host=env.get("GRPC_BIND_HOST", cls.bind_host),
            mongodb_uri=env.get("MONGODB_URI", cls.mongodb_uri),
            mongodb_max_pool_size=pool_size(env),
            mongodb_database=env.get("EVENTOS_MONGODB_DATABASE", cls.mongodb_database),
            max_message_bytes=max_message_bytes(env),
            page_token_key=page_token_key(env),
        )
