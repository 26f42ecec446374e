"""Who is calling: signed bearer tokens, checked once per call by a server interceptor every service shares.

A token is a JWT signed with Ed25519 (PyJWT) carrying `sub`, `role`, `usuario_id` (a cliente's), `iss`,
`aud`, `iat` and `exp`. Two keys sign tokens, told apart by the header's `kid`:

- the issuer key (`kid` "issuer", `iss` ISSUER) signs people's tokens, `admin` and `cliente`, through
  `eventflow token`; the services hold only its public key, so a service that verifies cannot mint;
- reservas' own key (`kid` "reservas", `iss` SERVICE_ISSUER) signs reservas' short-lived `servicio`
  tokens; usuarios and eventos trust its public key for that role and nothing else.

`AuthInterceptor` turns a missing or bad token into UNAUTHENTICATED, and a call the access table
(infra/access.py) does not allow into PERMISSION_DENIED, both with an ErrorInfo reason, before the
handler runs. Health and reflection need no token. The handler finds the caller in `current_principal()`.
"""

from __future__ import annotations

import contextvars
import enum
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from infra import keys
from infra.errors import DomainError, Unauthenticated
from infra.interceptors import STANDARD_SERVICES, Unary, UnaryInterceptor

log = logging.getLogger(__name__)

AUDIENCE = "eventflow"
ISSUER = "eventflow"
SERVICE_ISSUER = "eventflow-reservas"
ALGORITHM = "EdDSA"
#: Clocks of different machines disagree a little; a token this much past `exp` is still accepted.
LEEWAY_SECONDS = 30
#: The longest life a token may have; a longer one is refused (a leaked token must die on its own).
MAX_TTL_SECONDS = 7 * 24 * 3600
SERVICE_TOKEN_TTL_SECONDS = 300

#: Methods anyone may call: the standard health service and server reflection.
PUBLIC_PREFIXES = STANDARD_SERVICES


class Role(enum.StrEnum):
    ADMIN = "admin"
    CLIENTE = "cliente"
    SERVICIO = "servicio"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: `usuario_id` is set for a cliente, empty otherwise."""

    sub: str
    role: Role
    usuario_id: str = ""


_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


def current_principal() -> Principal | None:
    """The caller of the RPC being handled (None outside one, or for health and reflection)."""
    return _principal.get()


# -- minting -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenIssuer:
    """Signs tokens with one private key; `kid` and `issuer` say which key it is."""

    key: Ed25519PrivateKey
    kid: str = "issuer"
    issuer: str = ISSUER
    audience: str = AUDIENCE

    def mint(self, role: Role, sub: str, *, usuario_id: str = "", ttl_seconds: float = 3600) -> str:
        if not 0 < ttl_seconds <= MAX_TTL_SECONDS:
            raise ValueError(f"a token lives from 1 second to {MAX_TTL_SECONDS // 86400} days, not {ttl_seconds} s")
        if (role is Role.CLIENTE) != bool(usuario_id):
            raise ValueError("a cliente token is bound to one usuario_id, and only a cliente token is")
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": sub, "role": role.value, "iss": self.issuer, "aud": self.audience,
            "iat": now, "exp": now + int(ttl_seconds),
        }  # fmt: skip
        if usuario_id:
            claims["usuario_id"] = usuario_id
        return jwt.encode(claims, self.key, algorithm=ALGORITHM, headers={"kid": self.kid})


def service_issuer(key: Ed25519PrivateKey) -> TokenIssuer:
    """The issuer of reservas' own `servicio` tokens."""
    return TokenIssuer(key, kid="reservas", issuer=SERVICE_ISSUER)


class ServiceToken:
    """reservas' own short-lived `servicio` token, minted again a minute before it expires."""

    def __init__(self, issuer: TokenIssuer, ttl_seconds: float = SERVICE_TOKEN_TTL_SECONDS) -> None:
        self.issuer = issuer
        self.ttl = ttl_seconds
        self._token = ""
        self._renew_at = 0.0

    def __call__(self) -> str:
        now = time.monotonic()
        if now >= self._renew_at:
            self._token = self.issuer.mint(Role.SERVICIO, "reservas", ttl_seconds=self.ttl)
            self._renew_at = now + max(self.ttl - 60, self.ttl / 2)
        return self._token


# -- verifying ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustedKey:
    """A public key the verifier accepts, the `iss` its tokens must carry and the roles it may grant."""

    key: Ed25519PublicKey
    issuer: str
    roles: frozenset[Role]


class TokenVerifier:
    """Checks a token's signature and claims; remembers recent good tokens until they expire."""

    def __init__(self, trusted: Mapping[str, TrustedKey], audience: str = AUDIENCE, cache_size: int = 4096) -> None:
        self.trusted = dict(trusted)
        self.audience = audience
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._cache_size = cache_size

    def verify(self, token: str) -> Principal:
        cached = self._cache.get(token)
        if cached is not None and cached[1] + LEEWAY_SECONDS > time.time():
            self._cache.move_to_end(token)
            return cached[0]
        principal, expires = self._verify(token)
        self._cache[token] = (principal, expires)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError:
            raise _bad("the token is not a JWT", "TOKEN_MALFORMED") from None
        trusted = self.trusted.get(kid) if isinstance(kid, str) else None
        if trusted is None:
            raise _bad("the token is not signed by a key this deployment trusts", "TOKEN_BAD_SIGNATURE")
        try:
            claims = jwt.decode(
                token,
                trusted.key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=trusted.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["sub", "role", "iss", "aud", "iat", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise _bad("the token has expired; get a new one", "TOKEN_EXPIRED") from None
        except jwt.InvalidSignatureError:
            raise _bad("the token's signature does not verify", "TOKEN_BAD_SIGNATURE") from None
        except jwt.InvalidAudienceError:
            raise _bad(f"the token is not for this audience (expected {self.audience!r})", "TOKEN_WRONG_AUDIENCE") from None
        except jwt.InvalidIssuerError:
            raise _bad(f"the token is not from the expected issuer ({trusted.issuer!r})", "TOKEN_WRONG_ISSUER") from None
        except jwt.MissingRequiredClaimError as error:
            raise _bad(f"the token lacks the {error.claim!r} claim", "TOKEN_INVALID") from None
        except jwt.InvalidTokenError as error:
            raise _bad(f"the token is not valid: {error}", "TOKEN_INVALID") from None
        role_name, sub, usuario_id = claims.get("role"), claims.get("sub"), claims.get("usuario_id", "")
        if not all(isinstance(value, str) for value in (role_name, sub, usuario_id)) or (
            role_name not in Role._value2member_map_
        ):
            raise _bad("the token's role, sub or usuario_id is not valid", "TOKEN_INVALID")
        # PyJWT reads "123" as a time too; RFC 7519's NumericDate is a JSON number, and the arithmetic below needs one.
        if not all(isinstance(claims[c], int | float) and not isinstance(claims[c], bool) for c in ("iat", "exp")):
            raise _bad("the token's iat and exp must be numbers", "TOKEN_INVALID")
        role = Role(role_name)
        if role not in trusted.roles:
            raise _bad(f"a {role} token cannot come from this signer", "TOKEN_INVALID")
        if (role is Role.CLIENTE) != bool(usuario_id):
            raise _bad("a cliente token names its usuario_id, and only a cliente token does", "TOKEN_INVALID")
        if claims["exp"] - claims["iat"] > MAX_TTL_SECONDS:
            raise _bad("the token lives longer than this deployment allows", "TOKEN_INVALID")
        return Principal(sub, role, usuario_id), float(claims["exp"])


def _bad(message: str, reason: str) -> Unauthenticated:
    return Unauthenticated(message, reason=reason)


# -- configuration -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthSettings:
    """The keys one service holds: what it trusts, and (reservas) what it signs its own calls with."""

    verifier: TokenVerifier
    service_token: ServiceToken | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, trusts_service: bool, signs_service: bool) -> AuthSettings:
        """Read the keys from the environment (see infra/keys.py); a missing key is an error, never a default.

        `trusts_service`: accept reservas' servicio tokens (usuarios, eventos).
        `signs_service`: hold reservas' private key to sign its own calls (reservas).
        """
        issuer_pem = keys.require_secret(env, keys.ISSUER_PUBLIC_KEY)
        trusted = {
            "issuer": TrustedKey(
                keys.load_public_key(issuer_pem, keys.ISSUER_PUBLIC_KEY),
                ISSUER,
                frozenset({Role.ADMIN, Role.CLIENTE}),
            )
        }
        if trusts_service:
            pem = keys.require_secret(env, keys.SERVICE_PUBLIC_KEY)
            trusted["reservas"] = TrustedKey(
                keys.load_public_key(pem, keys.SERVICE_PUBLIC_KEY), SERVICE_ISSUER, frozenset({Role.SERVICIO})
            )
        token = None
        if signs_service:
            pem = keys.require_secret(env, keys.SERVICE_PRIVATE_KEY)
            token = ServiceToken(service_issuer(keys.load_private_key(pem, keys.SERVICE_PRIVATE_KEY)))
        return cls(TokenVerifier(trusted), token)


# -- the server side ---------------------------------------------------------------------------------

#: What the interceptor asks of the access table: may this caller make this call with this request?
#: It may fill the request in (a cliente's own usuario_id) and raises PermissionDenied when not.
Authorize = Callable[[str, Principal, Any], Awaitable[None]]
#: The rate limiter's question: may this principal make one more call now? Raises ResourceExhausted when not.
Admit = Callable[[Principal], Awaitable[None]]


def bearer(metadata: Any) -> str:
    """The token of an `authorization: Bearer <token>` header, or an Unauthenticated that says what is wrong."""
    values = [v for k, v in (metadata or ()) if k == "authorization"]
    if not values:
        raise _bad("this call needs a token: send the metadata 'authorization: Bearer <token>'", "TOKEN_MISSING")
    if len(values) > 1:
        raise _bad("send one authorization header, not several", "TOKEN_MALFORMED")
    value = values[0] if isinstance(values[0], str) else values[0].decode("latin-1")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _bad("the authorization header must read 'Bearer <token>'", "TOKEN_MALFORMED")
    return token.strip()


class AuthInterceptor(UnaryInterceptor):
    """Authenticates every call but health and reflection, takes it from the caller's rate limit (`limiter`),
    then asks `authorize` whether it is allowed.

    Mounted inside the error-mapping interceptor, so its refusals become rich statuses like any domain error.
    """

    def __init__(self, verifier: TokenVerifier, authorize: Authorize, limiter: Admit | None = None) -> None:
        self.verifier = verifier
        self.authorize = authorize
        self.limiter = limiter

    def not_unary(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler | None:
        # Health's Watch and reflection stream; every EventFlow RPC is unary: anything else is not served at all.
        return handler if method.startswith(PUBLIC_PREFIXES) else None

    def wrap(self, method: str, metadata: Sequence[Any], inner: Unary) -> Unary | None:
        if method.startswith(PUBLIC_PREFIXES):
            return None

        async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
            principal = None
            try:
                principal = self.verifier.verify(bearer(metadata))
                if self.limiter is not None:  # an identity over its rate is refused before it costs anything more
                    await self.limiter(principal)
                await self.authorize(method, principal, request)
            except DomainError as refusal:  # an audit line per refusal: who, what, why (never the token)
                who = {"role": str(principal.role), "sub": principal.sub} if principal else {}
                log.info("call refused", extra={"method": method, "reason": refusal.reason, "peer": context.peer(), **who})
                raise
            token = _principal.set(principal)
            try:
                return await inner(request, context)
            finally:
                _principal.reset(token)

        return checked


# -- the client side ---------------------------------------------------------------------------------


class BearerAuth(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call; `token` is a string or a function giving one."""

    def __init__(self, token: str | Callable[[], str]) -> None:
        self._token = token if callable(token) else (lambda: token)

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        metadata = [*(client_call_details.metadata or ()), ("authorization", f"Bearer {self._token()}")]
        details = grpc.aio.ClientCallDetails(
            client_call_details.method,
            client_call_details.timeout,
            metadata,
            client_call_details.credentials,
            client_call_details.wait_for_ready,
        )
        return await continuation(details, request)


__all__ = [
    "AUDIENCE",
    "AuthInterceptor",
    "AuthSettings",
    "BearerAuth",
    "ISSUER",
    "Principal",
    "Role",
    "SERVICE_ISSUER",
    "ServiceToken",
    "TokenIssuer",
    "TokenVerifier",
    "TrustedKey",
    "current_principal",
    "service_issuer",
]
