"""Who a fuzzed call claims to be: the stack's real tokens, and the ways of getting a token wrong.

Valid tokens come from `eventflow token` (admin, servicio, and one cliente per user of the scene). The
bad ones are hypothesis strategies, each giving a `(variant, metadata)` pair:

- `missing`: no `authorization` header at all (or the token under another header's name);
- `malformed`: a header that is not `Bearer <JWT>`: empty, another scheme, two headers, garbage text,
  JWT-shaped garbage, a real token cut short;
- `expired`: signed with the deployment's own key, right issuer and audience, `exp` in the past;
- `forged`: signed with another key, tampered after signing, `alg: none`, HS256 with the public key as
  secret (algorithm confusion), a role its signer may not grant, or signed with the deployment's key but
  with one to three claims or header fields broken (missing, wrong type, wrong value, not yet valid,
  living too long). Every variant is invalid on its own, so every one must be UNAUTHENTICATED.

Signing bad tokens needs the deployment's private keys, read from <data dir>/keys as `eventflow up`
wrote them: the fuzzer is the deployment's operator testing its own services.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import strategies as st

from infra.auth import AUDIENCE, ISSUER, MAX_TTL_SECONDS, SERVICE_ISSUER, Role
from infra.keys import KeyFiles, load_private_key

Metadata = tuple[tuple[str, str], ...]
#: A bad token and how it is bad.
Bad = tuple[str, Metadata]

#: The server's grace on `exp` (infra.auth.LEEWAY_SECONDS); an expired token here is well past it.
EXPIRED_BY_AT_LEAST = 120
#: gRPC refuses headers over 8 KiB now and then (and always over 16 KiB) before any service code runs:
#: garbage stays clear of that, with room for the other headers.
MAX_GARBAGE = 6000


@dataclass(frozen=True)
class Tokens:
    """The stack's valid tokens, and the keys that sign its expired and badly-claimed ones."""

    admin: str
    servicio: str
    #: usuario_id -> a cliente token bound to it (`eventflow token --role cliente --usuario ID`)
    clientes: Mapping[str, str]
    issuer_key: Ed25519PrivateKey
    service_key: Ed25519PrivateKey

    @classmethod
    def load(cls, keys_dir: Path, admin: str, servicio: str, clientes: Mapping[str, str]) -> Tokens:
        files = KeyFiles(keys_dir)
        return cls(
            admin,
            servicio,
            dict(clientes),
            load_private_key(files.issuer_private.read_bytes(), str(files.issuer_private)),
            load_private_key(files.service_private.read_bytes(), str(files.service_private)),
        )

    def of(self, role: Role, usuario_id: str = "") -> str:
        if role is Role.CLIENTE:
            return self.clientes[usuario_id]
        return self.admin if role is Role.ADMIN else self.servicio


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@cache
def _stranger_key() -> Ed25519PrivateKey:
    """A key no deployment trusts (one per fuzzing process)."""
    return Ed25519PrivateKey.generate()


def _claims(role: Role, usuario_id: str = "", *, issuer: str = ISSUER, ttl: int = 3600) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": usuario_id or role.value, "role": role.value, "iss": issuer, "aud": AUDIENCE,
                              "iat": now, "exp": now + ttl}  # fmt: skip
    if usuario_id:
        claims["usuario_id"] = usuario_id
    return claims


def _signer(tokens: Tokens, role: Role) -> tuple[Ed25519PrivateKey, str, str]:
    """The key, kid and issuer that sign a token of `role` for real."""
    if role is Role.SERVICIO:
        return tokens.service_key, "reservas", SERVICE_ISSUER
    return tokens.issuer_key, "issuer", ISSUER


def _sign(claims: Mapping[str, Any], key: Ed25519PrivateKey, headers: Mapping[str, Any]) -> str:
    """A JWS signed with `key`, by hand: PyJWT would refuse to sign some of the headers and claims drawn here."""
    signing_input = f"{_b64(_json({'alg': 'EdDSA', 'typ': 'JWT', **headers}))}.{_b64(_json(dict(claims)))}"
    return f"{signing_input}.{_b64(key.sign(signing_input.encode()))}"


def _roles_and_users(tokens: Tokens) -> st.SearchStrategy[tuple[Role, str]]:
    return st.one_of(
        st.sampled_from([(Role.ADMIN, ""), (Role.SERVICIO, "")]),
        st.sampled_from(sorted(tokens.clientes)).map(lambda u: (Role.CLIENTE, u)),
    )


# -- no token ---------------------------------------------------------------------------------------------


def missing(tokens: Tokens) -> st.SearchStrategy[Bad]:
    return st.sampled_from([
        ("no-header", ()),
        ("other-header", (("x-authorization", f"Bearer {tokens.admin}"),)),
        ("token-header", (("token", tokens.admin),)),
    ])  # fmt: skip


# -- malformed --------------------------------------------------------------------------------------------

_NOT_STRINGS = st.one_of(st.integers(), st.none(), st.booleans(), st.lists(st.integers(), max_size=2),
                         st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))  # fmt: skip

_PRINTABLE = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
_B64URL = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def malformed(tokens: Tokens) -> st.SearchStrategy[Bad]:
    admin = tokens.admin
    fixed = st.sampled_from([
        ("empty", (("authorization", ""),)),
        ("bearer-alone", (("authorization", "Bearer"),)),
        ("bearer-blank", (("authorization", "Bearer    "),)),
        ("basic-scheme", (("authorization", f"Basic {admin}"),)),
        ("token-scheme", (("authorization", f"Token {admin}"),)),
        ("no-scheme", (("authorization", admin),)),
        ("two-headers", (("authorization", f"Bearer {admin}"), ("authorization", f"Bearer {admin}"))),
        ("truncated", bearer(admin[: len(admin) // 2])),
        ("two-segments", bearer(admin.rsplit(".", 1)[0])),
        ("four-segments", bearer(admin + ".AAAA")),
        ("null", bearer("null")),
    ])  # fmt: skip
    garbage = st.text(_PRINTABLE, min_size=1, max_size=200).map(lambda t: ("garbage", bearer(t)))
    long_garbage = st.integers(1000, MAX_GARBAGE).map(lambda n: ("long-garbage", bearer("A" * n)))
    segments = st.lists(st.text(_B64URL, max_size=60), min_size=3, max_size=3)
    jwt_shaped = segments.map(lambda s: ("jwt-shaped", bearer(".".join(s))))
    # A JSON header that is not a usable one: kid of another type, no kid, not an object.
    odd_header = st.one_of(
        st.fixed_dictionaries({"alg": st.just("EdDSA"), "kid": _NOT_STRINGS}),
        st.fixed_dictionaries({"alg": st.just("EdDSA")}),
        st.lists(st.integers(), max_size=3),
        st.text(max_size=10),
    ).map(lambda h: ("odd-header", bearer(f"{_b64(_json(h))}.{admin.split('.')[1]}.{admin.split('.')[2]}")))
    not_json = st.binary(min_size=1, max_size=40).map(lambda b: ("not-json", bearer(f"{_b64(b)}.{_b64(b)}.{_b64(b)}")))
    return st.one_of(fixed, garbage, long_garbage, jwt_shaped, odd_header, not_json)


# -- expired ----------------------------------------------------------------------------------------------


def expired(tokens: Tokens) -> st.SearchStrategy[Bad]:
    """Signed for real, but `exp` passed from two minutes to three years ago."""

    def make(who: tuple[Role, str], ago: int, ttl: int) -> Bad:
        role, usuario_id = who
        key, kid, issuer = _signer(tokens, role)
        claims = _claims(role, usuario_id, issuer=issuer)
        claims["exp"] = int(time.time()) - ago
        claims["iat"] = claims["exp"] - ttl
        return f"expired-{role.value}", bearer(_sign(claims, key, {"kid": kid}))

    return st.builds(make, _roles_and_users(tokens), st.integers(EXPIRED_BY_AT_LEAST, 10**8),
                     st.integers(1, MAX_TTL_SECONDS))  # fmt: skip


# -- forged -----------------------------------------------------------------------------------------------

#: Not a time (RFC 7519's NumericDate is a JSON number), although PyJWT reads digits in a string as one.
#: Floats are times, so only those no valid token could carry: negative, NaN, infinite, or past the year 2096.
_NOT_TIMES = st.one_of(
    st.text(max_size=10), st.none(), st.lists(st.integers(), max_size=2),
    st.floats().filter(lambda f: not 0 <= f <= 4e9),
    st.integers(-3600, 3600).map(lambda d: str(int(time.time()) + d)),
)
_NOT_ROLES = st.one_of(st.sampled_from(["", "root", "Admin", "ADMIN", "superadmin", "admin ", " cliente"]), _NOT_STRINGS)

Draw = Callable[[st.SearchStrategy[Any]], Any]
#: One way to break a token signed with the deployment's key: (draw, claims, header) -> None, in place.
Breaker = Callable[[Draw, dict[str, Any], dict[str, Any]], None]


def _drop_claim(draw: Draw, claims: dict[str, Any], header: dict[str, Any]) -> None:
    claims.pop(draw(st.sampled_from(["sub", "role", "iss", "aud", "iat", "exp"])), None)


def _set(name: str, values: st.SearchStrategy[Any]) -> Breaker:
    def breaker(draw: Draw, claims: dict[str, Any], header: dict[str, Any]) -> None:
        claims[name] = draw(values)

    return breaker


def _shift(name: str, low: int, high: int) -> Breaker:
    def breaker(draw: Draw, claims: dict[str, Any], header: dict[str, Any]) -> None:
        claims[name] = int(time.time()) + draw(st.integers(low, high))

    return breaker


def _usuario_mismatch(draw: Draw, claims: dict[str, Any], header: dict[str, Any]) -> None:
    """A cliente without its usuario_id, or another role with one."""
    if claims.get("role") == Role.CLIENTE:
        claims.pop("usuario_id", None)
    else:
        claims["usuario_id"] = draw(st.text(min_size=1, max_size=20))


def _too_long(draw: Draw, claims: dict[str, Any], header: dict[str, Any]) -> None:
    claims["exp"] = int(time.time()) + MAX_TTL_SECONDS + draw(st.integers(60, 10**9))


def _header(name: str, values: st.SearchStrategy[Any]) -> Breaker:
    def breaker(draw: Draw, claims: dict[str, Any], header: dict[str, Any]) -> None:
        header[name] = draw(values)

    return breaker


BREAKERS: dict[str, Breaker] = {
    "missing-claim": _drop_claim,
    "role": _set("role", _NOT_ROLES),
    "sub-type": _set("sub", _NOT_STRINGS),
    "usuario_id-type": _set("usuario_id", _NOT_STRINGS.filter(lambda v: v is not None)),
    "usuario_id-mismatch": _usuario_mismatch,
    "exp-type": _set("exp", _NOT_TIMES),
    "iat-type": _set("iat", _NOT_TIMES),
    "iat-future": _shift("iat", 3600, 10**8),
    "nbf-future": _shift("nbf", 3600, 10**8),
    "audience": _set("aud", st.one_of(st.sampled_from(["", "eventflow-admin", "Eventflow", "other"]), st.integers())),
    "issuer": _set("iss", st.one_of(st.sampled_from(["", "evil", "eventflow ", "EVENTFLOW"]), st.integers())),
    "lifetime": _too_long,
    "kid": _header("kid", st.one_of(st.sampled_from(["", "issuer ", "Issuer", "page-token", "../issuer"]), _NOT_STRINGS)),
    "alg": _header("alg", st.sampled_from(["HS256", "RS256", "ES256", "none", "eddsa"])),
}


@st.composite
def _broken_claims(draw: Draw, tokens: Tokens) -> Bad:
    role, usuario_id = draw(_roles_and_users(tokens))
    key, kid, issuer = _signer(tokens, role)
    claims, header = _claims(role, usuario_id, issuer=issuer), {"kid": kid}
    # Mostly one thing broken: then it is the only reason to refuse the token, and its own check must.
    how_many = draw(st.sampled_from([1, 1, 1, 2, 3]))
    chosen = sorted(draw(st.sets(st.sampled_from(sorted(BREAKERS)), min_size=how_many, max_size=how_many)))
    for name in chosen:
        BREAKERS[name](draw, claims, header)
    return "claims:" + "+".join(chosen), bearer(_sign(claims, key, header))


def _unsigned(claims: Mapping[str, Any], header: Mapping[str, Any], signature: bytes = b"") -> str:
    return f"{_b64(_json(dict(header)))}.{_b64(_json(dict(claims)))}.{_b64(signature)}"


def forged(tokens: Tokens) -> st.SearchStrategy[Bad]:
    """Half of the forged tokens break their claims: that is where a verifier has most to check."""
    return st.booleans().flatmap(lambda claims: _broken_claims(tokens) if claims else _forged_otherwise(tokens))


def _forged_otherwise(tokens: Tokens) -> st.SearchStrategy[Bad]:
    admin = _claims(Role.ADMIN)
    public_pem = tokens.issuer_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def other_key(who: tuple[Role, str]) -> Bad:
        role, usuario_id = who
        _, kid, issuer = _signer(tokens, role)
        return "other-key", bearer(_sign(_claims(role, usuario_id, issuer=issuer), _stranger_key(), {"kid": kid}))

    def escalated(usuario_id: str) -> Bad:
        """A cliente's real token whose payload now says admin, signature kept."""
        header, _, signature = tokens.clientes[usuario_id].split(".")
        return "escalated", bearer(f"{header}.{_b64(_json(_claims(Role.ADMIN)))}.{signature}")

    def flipped(position: int) -> Bad:
        header, payload, signature = tokens.admin.split(".")
        i = position % len(signature)
        swapped = signature[:i] + ("A" if signature[i] != "A" else "B") + signature[i + 1 :]
        return "flipped-signature", bearer(f"{header}.{payload}.{swapped}")

    def alg_none(kid: str) -> Bad:
        return "alg-none", bearer(_unsigned(admin, {"alg": "none", "kid": kid}))

    def hs256() -> Bad:
        header = {"alg": "HS256", "kid": "issuer", "typ": "JWT"}
        signing_input = f"{_b64(_json(header))}.{_b64(_json(admin))}".encode()
        mac = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
        return "hs256-public-key", bearer(f"{signing_input.decode()}.{_b64(mac)}")

    def cross_signer(role: Role) -> Bad:
        """Signed by a real key that may not grant this role: admin by reservas' key, servicio by the issuer's."""
        if role is Role.SERVICIO:
            key, kid, issuer = tokens.issuer_key, "issuer", ISSUER
        else:
            key, kid, issuer = tokens.service_key, "reservas", SERVICE_ISSUER
        return f"cross-signer-{role.value}", bearer(_sign(_claims(role, issuer=issuer), key, {"kid": kid}))

    return st.one_of(
        st.builds(other_key, _roles_and_users(tokens)),
        st.builds(escalated, st.sampled_from(sorted(tokens.clientes))),
        st.builds(flipped, st.integers(0, 200)),
        st.builds(alg_none, st.sampled_from(["issuer", "reservas"])),
        st.builds(hs256),
        st.builds(cross_signer, st.sampled_from([Role.ADMIN, Role.SERVICIO])),
    )
