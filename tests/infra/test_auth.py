"""Tokens and keys: what the verifier accepts and refuses, the access table as the README prints it, the CLI."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from callers import AUTH, ISSUER, KEY_ENV, SERVICE_ISSUER
from infra import keys
from infra.access import markdown_table
from infra.auth import AUDIENCE, MAX_TTL_SECONDS, Principal, Role, ServiceToken, TokenIssuer, bearer
from infra.errors import Unauthenticated

README = Path(__file__).resolve().parents[2] / "README.md"


def reason(token: str) -> str:
    with pytest.raises(Unauthenticated) as caught:
        AUTH.verifier.verify(token)
    return caught.value.reason


def raw(claims: dict[str, Any], key: Ed25519PrivateKey | None = None, kid: str = "issuer") -> str:
    return jwt.encode(claims, key or ISSUER.key, algorithm="EdDSA", headers={"kid": kid})


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "x", "role": "admin", "iss": "eventflow", "aud": AUDIENCE, "iat": now, "exp": now + 600}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def test_valid_tokens_name_their_principal() -> None:
    assert AUTH.verifier.verify(ISSUER.mint(Role.ADMIN, "ops")) == Principal("ops", Role.ADMIN)
    cliente = ISSUER.mint(Role.CLIENTE, "usuario:u1", usuario_id="u1")
    assert AUTH.verifier.verify(cliente) == Principal("usuario:u1", Role.CLIENTE, "u1")
    assert AUTH.verifier.verify(SERVICE_ISSUER.mint(Role.SERVICIO, "reservas")).role is Role.SERVICIO


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (raw(claims(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200)), "TOKEN_EXPIRED"),
        (raw(claims(), Ed25519PrivateKey.generate()), "TOKEN_BAD_SIGNATURE"),
        (raw(claims(), kid="someone"), "TOKEN_BAD_SIGNATURE"),
        (raw(claims(aud="elsewhere")), "TOKEN_WRONG_AUDIENCE"),
        (raw(claims(iss="elsewhere")), "TOKEN_WRONG_ISSUER"),
        (raw(claims(sub=None)), "TOKEN_INVALID"),
        (raw(claims(exp=None)), "TOKEN_INVALID"),
        (raw(claims(role="root")), "TOKEN_INVALID"),
        (raw(claims(role="cliente")), "TOKEN_INVALID"),  # a cliente bound to nobody
        (raw(claims(usuario_id="u1")), "TOKEN_INVALID"),  # an admin bound to a user
        (raw(claims(exp=int(time.time()) + MAX_TTL_SECONDS + 600)), "TOKEN_INVALID"),  # lives too long
        (raw(claims(role="servicio")), "TOKEN_INVALID"),  # the issuer cannot mint reservas' identity
        (raw(claims(role="admin", iss="eventflow-reservas"), SERVICE_ISSUER.key, "reservas"), "TOKEN_INVALID"),
        ("not-a-jwt", "TOKEN_MALFORMED"),
        (jwt.encode(claims(), "s" * 32, algorithm="HS256", headers={"kid": "issuer"}), "TOKEN_INVALID"),
    ],
)
def test_bad_tokens_are_unauthenticated_with_a_reason(token: str, expected: str) -> None:
    assert reason(token) == expected


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [((), "TOKEN_MISSING"), ((("authorization", "Basic abc"),), "TOKEN_MALFORMED"),
     ((("authorization", "Bearer "),), "TOKEN_MALFORMED"),
     ((("authorization", "Bearer a"), ("authorization", "Bearer b")), "TOKEN_MALFORMED")],
)  # fmt: skip
def test_the_authorization_header_must_be_one_bearer_token(metadata: Any, expected: str) -> None:
    with pytest.raises(Unauthenticated) as caught:
        bearer(metadata)
    assert caught.value.reason == expected
    assert bearer((("authorization", "bearer  abc "),)) == "abc"


def test_reservas_renews_its_own_token_before_it_expires() -> None:
    source = ServiceToken(SERVICE_ISSUER, ttl_seconds=120)
    first = source()
    assert source() == first  # cached
    source._renew_at = 0  # as if a minute before expiry
    time.sleep(1.1)  # iat is in seconds
    assert source() != first and AUTH.verifier.verify(source()).role is Role.SERVICIO


def test_minting_refuses_what_verification_would() -> None:
    with pytest.raises(ValueError):
        ISSUER.mint(Role.CLIENTE, "x")
    with pytest.raises(ValueError):
        ISSUER.mint(Role.ADMIN, "x", ttl_seconds=MAX_TTL_SECONDS + 1)
    assert isinstance(TokenIssuer(Ed25519PrivateKey.generate()).mint(Role.ADMIN, "x"), str)


def test_keys_are_made_once_with_owner_only_permissions(tmp_path: Path) -> None:
    files = keys.ensure_keys(tmp_path / "keys")
    assert stat.S_IMODE(files.directory.stat().st_mode) == 0o700
    for private in (files.issuer_private, files.service_private, files.page_token):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    before = files.issuer_private.read_bytes()
    keys.ensure_keys(tmp_path / "keys")
    assert files.issuer_private.read_bytes() == before  # tokens minted earlier stay valid
    assert "EVENTFLOW_SERVICE_PRIVATE_KEY_FILE" not in files.env(service_private=False)


def test_secrets_come_inline_or_from_a_file_never_from_a_default(tmp_path: Path) -> None:
    pem = Path(KEY_ENV["EVENTFLOW_ISSUER_PUBLIC_KEY_FILE"]).read_text()
    assert keys.read_secret({"EVENTFLOW_ISSUER_PUBLIC_KEY": pem}, keys.ISSUER_PUBLIC_KEY) == pem.encode()
    assert keys.read_secret({}, keys.ISSUER_PUBLIC_KEY) is None
    with pytest.raises(ValueError, match="either"):
        keys.read_secret({"X": "a", "X_FILE": "b"}, "X")
    (tmp_path / "empty").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        keys.read_secret({"X_FILE": str(tmp_path / "empty")}, "X")
    with pytest.raises(ValueError, match="not a PEM public key"):
        keys.load_public_key(b"hello", "X")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        keys.page_token_key({"EVENTFLOW_PAGE_TOKEN_KEY": "short"})


def test_the_readme_prints_the_access_table_as_the_code_has_it() -> None:
    assert markdown_table() in README.read_text(encoding="utf-8"), "README's access table differs from infra/access.py"


def test_eventflow_token_prints_a_token_the_services_accept(tmp_path: Path) -> None:
    files = keys.ensure_keys(tmp_path / "keys")
    command = [sys.executable, "-m", "infra.cli", "token", "--data-dir", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTFLOW_")}
    made = subprocess.run([*command, "--role", "cliente", "--usuario", "u7", "--ttl", "5m"],  # noqa: S603
                          capture_output=True, text=True, env=env, timeout=30, check=True)  # fmt: skip
    from infra.auth import AuthSettings  # noqa: PLC0415

    verifier = AuthSettings.from_env(files.env(service_private=True), trusts_service=True, signs_service=False).verifier
    principal = verifier.verify(made.stdout.strip())
    assert principal == Principal("usuario:u7", Role.CLIENTE, "u7")
    refused = subprocess.run([*command, "--role", "cliente"], capture_output=True, text=True, env=env, timeout=30)  # noqa: S603
    assert refused.returncode == 2 and "--usuario" in refused.stderr
