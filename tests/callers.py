"""Who the tests call as: one deployment's keys for the whole test session, tokens, and channels that carry them.

Every server a test starts verifies tokens with `AUTH` (it trusts both signers and signs as reservas) and
signs page tokens with `PAGE_TOKEN_KEY`; every subprocess gets `KEY_ENV`. `open_channel(address)` calls as
admin, or as servicio for the RPCs that only servicio may call (by infra/access.py's table), so tests about
something else need not think about tokens; `open_channel(address, token)` calls with one given token.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import grpc

from infra.access import RULES
from infra.auth import AuthSettings, BearerAuth, Role, TokenIssuer, service_issuer
from infra.keys import PAGE_TOKEN_KEY as PAGE_TOKEN_KEY_VAR
from infra.keys import ensure_keys, load_private_key, page_token_key
from infra.tls import ClientTLS, aio_channel

_directory = Path(tempfile.mkdtemp(prefix="eventflow-test-keys-"))
atexit.register(shutil.rmtree, _directory, ignore_errors=True)

KEYS = ensure_keys(_directory / "keys")
#: The *_FILE variables of a service subprocess (reservas' private key included).
KEY_ENV = KEYS.env(service_private=True)
AUTH = AuthSettings.from_env(KEY_ENV, trusts_service=True, signs_service=True)
#: The page-token key in KEY_ENV, for Configs built in code (Config(auth=AUTH, page_token_key=PAGE_TOKEN_KEY)).
PAGE_TOKEN_KEY = page_token_key(KEY_ENV)
#: KEY_ENV but the page-token key: what a service is given to show it refuses to start without that key.
KEY_ENV_WITHOUT_PAGE_TOKEN_KEY = {k: v for k, v in KEY_ENV.items() if not k.startswith(PAGE_TOKEN_KEY_VAR)}
ISSUER = TokenIssuer(load_private_key(KEYS.issuer_private.read_bytes(), "issuer.key"))
SERVICE_ISSUER = service_issuer(load_private_key(KEYS.service_private.read_bytes(), "reservas.key"))


def token(role: Role, usuario_id: str = "", ttl_seconds: float = 3600) -> str:
    """A valid token of this session's deployment."""
    if role is Role.SERVICIO:
        return SERVICE_ISSUER.mint(role, "reservas", ttl_seconds=ttl_seconds)
    return ISSUER.mint(role, f"usuario:{usuario_id}" if usuario_id else role.value, usuario_id=usuario_id,
                       ttl_seconds=ttl_seconds)  # fmt: skip


#: Tests that hammer the services (races, soak) are about something else than the rate limits.
NO_LIMITS = {role: None for role in Role}
NO_LIMITS_ENV = {f"EVENTFLOW_RATE_LIMIT_{role.name}": "off" for role in Role}

ADMIN = token(Role.ADMIN, ttl_seconds=24 * 3600)
SERVICIO = token(Role.SERVICIO, ttl_seconds=24 * 3600)


def cliente(usuario_id: str) -> str:
    return token(Role.CLIENTE, usuario_id)


class AsAllowed(grpc.aio.UnaryUnaryClientInterceptor):
    """Calls as admin, or as servicio where the access table lets only servicio call."""

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        rule = RULES.get(details.method if isinstance(details.method, str) else details.method.decode())
        chosen = SERVICIO if rule is not None and Role.ADMIN not in rule.roles else ADMIN
        metadata = [*(details.metadata or ()), ("authorization", f"Bearer {chosen}")]
        new = grpc.aio.ClientCallDetails(details.method, details.timeout, metadata, details.credentials,
                                         details.wait_for_ready)  # fmt: skip
        return await continuation(new, request)


#: Channel options of a client that reconnects within a second after a server restart (gRPC's default backoff
#: grows to minutes): `open_channel(address, options=RECONNECT)`.
RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)]


def open_channel(
    address: str, token: str | None = None, *, client_tls: ClientTLS | None = None, **options: Any
) -> grpc.aio.Channel:
    """A channel whose calls carry `token`, or the token each call needs (AsAllowed): plaintext, or TLS with
    `client_tls`."""
    interceptor: grpc.aio.ClientInterceptor = BearerAuth(token) if token is not None else AsAllowed()
    if client_tls is None:
        return grpc.aio.insecure_channel(address, interceptors=[interceptor], **options)
    return aio_channel(address, client_tls, interceptors=[interceptor], **options)
