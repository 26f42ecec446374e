"""The deployment's keys: where they live, how they are made once, how services read them.

`eventflow up` makes them at its first run into <data dir>/keys (directory 0700, private files 0600):

  issuer.key, issuer.pub        Ed25519. The issuer key signs people's tokens (`eventflow token`);
                                services hold only issuer.pub, so a service that verifies cannot mint.
  reservas.key, reservas.pub    Ed25519. reservas signs its own short-lived `servicio` tokens with
                                reservas.key; usuarios and eventos trust reservas.pub for that role only.
  page-token.key                32 random bytes: the HMAC key of page tokens.

Services read each secret from the environment, inline (NAME) or from a file (NAME_FILE), never from
a default in the code: EVENTFLOW_ISSUER_PUBLIC_KEY, EVENTFLOW_SERVICE_PUBLIC_KEY (usuarios, eventos),
EVENTFLOW_SERVICE_PRIVATE_KEY (reservas only) and EVENTFLOW_PAGE_TOKEN_KEY.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ISSUER_PUBLIC_KEY = "EVENTFLOW_ISSUER_PUBLIC_KEY"
ISSUER_PRIVATE_KEY = "EVENTFLOW_ISSUER_PRIVATE_KEY"  # `eventflow token` only, never a service
SERVICE_PUBLIC_KEY = "EVENTFLOW_SERVICE_PUBLIC_KEY"
SERVICE_PRIVATE_KEY = "EVENTFLOW_SERVICE_PRIVATE_KEY"
PAGE_TOKEN_KEY = "EVENTFLOW_PAGE_TOKEN_KEY"

PAGE_TOKEN_KEY_BYTES = 32


class KeyConfigError(ValueError):
    """A key is missing or unreadable; the message names the variable or file to fix."""


@dataclass(frozen=True)
class KeyFiles:
    """The files of one deployment's keys (see the module docstring)."""

    directory: Path

    @property
    def issuer_private(self) -> Path:
        return self.directory / "issuer.key"

    @property
    def issuer_public(self) -> Path:
        return self.directory / "issuer.pub"

    @property
    def service_private(self) -> Path:
        return self.directory / "reservas.key"

    @property
    def service_public(self) -> Path:
        return self.directory / "reservas.pub"

    @property
    def page_token(self) -> Path:
        return self.directory / "page-token.key"

    def env(self, *, service_private: bool) -> dict[str, str]:
        """The *_FILE variables a service reads; `service_private` only for reservas."""
        env = {
            f"{ISSUER_PUBLIC_KEY}_FILE": str(self.issuer_public),
            f"{SERVICE_PUBLIC_KEY}_FILE": str(self.service_public),
            f"{PAGE_TOKEN_KEY}_FILE": str(self.page_token),
        }
        if service_private:
            env[f"{SERVICE_PRIVATE_KEY}_FILE"] = str(self.service_private)
        return env


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to a new file readable by its owner only (created 0600, never widened)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_keypair(private_path: Path, public_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    _write_private(
        private_path,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def ensure_keys(directory: Path) -> KeyFiles:
    """The deployment's keys in `directory`, made now if missing; existing keys are kept as they are."""
    files = KeyFiles(directory)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    for private, public in ((files.issuer_private, files.issuer_public), (files.service_private, files.service_public)):
        if not private.exists():
            public.unlink(missing_ok=True)
            _write_keypair(private, public)
        elif not public.exists():
            key = load_private_key(private.read_bytes(), str(private))
            public.write_bytes(
                key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
    if not files.page_token.exists():
        _write_private(files.page_token, secrets.token_bytes(PAGE_TOKEN_KEY_BYTES))
    return files


def read_secret(env: Mapping[str, str], name: str) -> bytes | None:
    """The secret NAME holds inline, or the content of the file NAME_FILE names; None when neither is set."""
    inline, path = env.get(name, ""), env.get(f"{name}_FILE", "")
    if inline and path:
        raise KeyConfigError(f"set either {name} or {name}_FILE, not both")
    if inline:
        return inline.encode()
    if not path:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise KeyConfigError(f"{name}_FILE={path} cannot be read: {error.strerror or error}") from None
    if not data.strip():
        raise KeyConfigError(f"{name}_FILE={path} is empty")
    return data


def require_secret(env: Mapping[str, str], name: str) -> bytes:
    """Like `read_secret`, but a missing secret is an error that says how to provide it."""
    data = read_secret(env, name)
    if data is None:
        raise KeyConfigError(
            f"{name} (or {name}_FILE) is not set: EventFlow has no default keys. "
            "`eventflow up` makes a deployment's keys in <data dir>/keys; elsewhere give the keys "
            "it made, or your own, through the environment"
        )
    return data


def load_public_key(pem: bytes, source: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise KeyConfigError(f"{source} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyConfigError(f"{source} is not an Ed25519 public key")
    return key


def load_private_key(pem: bytes, source: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise KeyConfigError(f"{source} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyConfigError(f"{source} is not an Ed25519 private key")
    return key


def private_key(env: Mapping[str, str], name: str, default: Path) -> Ed25519PrivateKey:
    """The private key NAME[_FILE] holds, else the one at `default` (where `eventflow up` keeps it, under its
    data directory); KeyConfigError saying where it looked when there is none."""
    pem = read_secret(env, name)
    if pem is not None:
        return load_private_key(pem, name)
    if not default.exists():
        raise KeyConfigError(
            f"no key at {default} and {name}[_FILE] is not set: `eventflow up` makes the keys at its first run "
            "(or pass --data-dir)"
        )
    return load_private_key(default.read_bytes(), str(default))


def page_token_key(env: Mapping[str, str]) -> bytes:
    """This deployment's page-token HMAC key (EVENTFLOW_PAGE_TOKEN_KEY[_FILE]), at least 16 bytes."""
    key = require_secret(env, PAGE_TOKEN_KEY)
    if len(key) < 16:
        raise KeyConfigError(f"{PAGE_TOKEN_KEY} must be at least 16 bytes long, got {len(key)}")
    return key
