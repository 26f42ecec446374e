"""Configuration of the usuarios server, from environment variables with localhost defaults.

USUARIOS_PORT (50051), GRPC_BIND_HOST ("[::]"), MONGODB_URI
("mongodb://localhost:27017/?directConnection=true"), USUARIOS_MONGODB_DATABASE ("eventflow_usuarios"),
MONGODB_MAX_POOL_SIZE (4: MongoDB connections of this process).
GRPC_MAX_MESSAGE_BYTES (1 MiB: the largest request or reply, see infra.limits),
EVENTFLOW_PAGE_TOKEN_KEY or EVENTFLOW_PAGE_TOKEN_KEY_FILE (required, no default: the key of page tokens).
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
    port: int = 50051
    bind_host: str = "[::]"
    mongodb_uri: str = "mongodb://localhost:27017/?directConnection=true"
    mongodb_database: str = "eventflow_usuarios"
    mongodb_max_pool_size: int = DEFAULT_POOL_SIZE
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    #: The deployment's page-token key; no default (create_app refuses to build a server without one).
    page_token_key: bytes = field(default=b"", repr=False)

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
            page_token_key=page_token_key(env),
        )
