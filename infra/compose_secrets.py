"""`eventflow compose-secrets`: the secrets docker-compose.yml needs, made once with random values.

Into the directory of docker-compose.yml (default: the current one) it writes:

  .env (0600)                   the passwords compose puts into each service's MONGODB_URI and REDIS_URL and
                                gives MongoDB's init script: EVENTFLOW_MONGO_{USUARIOS,EVENTOS,RESERVAS}_PASSWORD,
                                EVENTFLOW_REDIS_{USUARIOS,EVENTOS,RESERVAS}_PASSWORD
  secrets/ (0700)               no other user of this machine can enter it
    mongo-root-password (0600)  MongoDB's root user (MONGO_INITDB_ROOT_PASSWORD_FILE), for administration only:
                                no service holds it
    redis-users.acl (0644)      Redis' users (--aclfile): `default` off, one per service with the SHA-256 of
                                its password (not the password), every command but the @dangerous ones;
                                usuarios and eventos (rate limits only) on the rate limits' keys alone
    keys/                       the deployment's keys, as infra.keys.ensure_keys makes them; the ones a
                                container reads (issuer.pub, reservas.pub, reservas.key, page-token.key) are
                                0644, because the containers' user (uid 10001) is not the owner of the files
                                on this machine: secrets/ (0700) is what keeps them private here. issuer.key,
                                which signs people's tokens, is mounted nowhere and stays 0600.

Values already there are kept: MongoDB creates its users once, on an empty volume, so a new password would no
longer match, and tokens signed with the keys stay valid. What is missing is added. redis-users.acl is written
again each time from the password in .env.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infra import keys

#: The .env variables docker-compose.yml requires (each `${NAME:?...}` in it), in the order they are written.
MONGO_PASSWORDS = {
    "usuarios": "EVENTFLOW_MONGO_USUARIOS_PASSWORD",
    "eventos": "EVENTFLOW_MONGO_EVENTOS_PASSWORD",
    "reservas": "EVENTFLOW_MONGO_RESERVAS_PASSWORD",
}
REDIS_PASSWORDS = {
    "usuarios": "EVENTFLOW_REDIS_USUARIOS_PASSWORD",
    "eventos": "EVENTFLOW_REDIS_EVENTOS_PASSWORD",
    "reservas": "EVENTFLOW_REDIS_RESERVAS_PASSWORD",
}
ENV_PASSWORDS = (*MONGO_PASSWORDS.values(), *REDIS_PASSWORDS.values())

#: The keys each service's Redis user may touch: reservas all (holds, the admission gate, its rate limits);
#: usuarios and eventos only their rate limits' buckets (infra.ratelimit.RateLimiter.key: `ratelimit:{...}`).
REDIS_KEYS = {"usuarios": "ratelimit:*", "eventos": "ratelimit:*", "reservas": "*"}

#: What a password may be: it goes into URIs unescaped, and compose must not interpolate it (no `$`).
#: compose/mongo/initdb/10-eventflow-users.js checks the same rule.
PASSWORD_RULE = re.compile(r"[A-Za-z0-9_-]{16,}")


class ComposeSecretsError(ValueError):
    """A value already in .env or secrets/ cannot be used; the message says which and why."""


@dataclass(frozen=True)
class ComposeSecrets:
    """Where the files of one compose deployment's secrets live (see the module docstring)."""

    directory: Path

    @property
    def env_file(self) -> Path:
        return self.directory / ".env"

    @property
    def secrets_dir(self) -> Path:
        return self.directory / "secrets"

    @property
    def mongo_root_password(self) -> Path:
        return self.secrets_dir / "mongo-root-password"

    @property
    def redis_acl(self) -> Path:
        return self.secrets_dir / "redis-users.acl"

    @property
    def keys(self) -> keys.KeyFiles:
        return keys.KeyFiles(self.secrets_dir / "keys")


def new_password() -> str:
    return secrets.token_urlsafe(32)  # 43 characters of [A-Za-z0-9_-]: 256 random bits


def read_env_file(path: Path) -> dict[str, str]:
    """NAME=value lines of a compose .env file (comments and blank lines skipped, one level of quotes removed)."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name.strip()] = value
    return values


def _check_password(name: str, value: str, where: Path) -> None:
    if not PASSWORD_RULE.fullmatch(value):
        raise ComposeSecretsError(
            f"{name} in {where} must be at least 16 letters, digits, '-' or '_' (it goes into URIs unescaped); "
            f"remove the line and run `eventflow compose-secrets` again to get a new one"
        )


def _write_new(path: Path, text: str, mode: int) -> None:
    """Create `path` with `mode` from the start (never wider, not even for a moment; the umask may only narrow
    it at creation, so the mode is set again after)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    path.chmod(mode)


def _ensure_env(path: Path, make: Callable[[], str]) -> dict[str, str]:
    existing = read_env_file(path)
    missing = [name for name in ENV_PASSWORDS if not existing.get(name)]
    for name in ENV_PASSWORDS:
        if name not in missing:
            _check_password(name, existing[name], path)
    if missing:
        added = "".join(f"{name}={make()}\n" for name in missing)
        if path.exists():
            text = path.read_text(encoding="utf-8")
            with path.open("a", encoding="utf-8") as f:
                f.write(("" if not text or text.endswith("\n") else "\n") + added)
        else:
            header = (
                "# Made by `eventflow compose-secrets`: the passwords docker-compose.yml gives MongoDB's users,\n"
                "# Redis' user and the services. Keep it private. MongoDB creates its users once, on an empty\n"
                "# volume: a password changed here afterwards no longer matches (README, Deployment with\n"
                "# docker-compose).\n"
            )
            _write_new(path, header + added, 0o600)
    path.chmod(0o600)
    return read_env_file(path)


def redis_acl(passwords: dict[str, str]) -> str:
    """The users.acl of compose's Redis: the default user off; a user per service (`passwords`: service ->
    password), known by its password's SHA-256, allowed every command but the @dangerous ones (FLUSHALL,
    CONFIG, KEYS, DEBUG, SHUTDOWN...) on its keys (REDIS_KEYS), no Pub/Sub channel. Redis' ACL files take no
    comments."""
    lines = ["user default off"]
    for service, password in passwords.items():
        digest = hashlib.sha256(password.encode()).hexdigest()
        lines.append(f"user {service} on #{digest} resetchannels ~{REDIS_KEYS[service]} +@all -@dangerous")
    return "\n".join(lines) + "\n"


def ensure_compose_secrets(directory: Path, make_password: Callable[[], str] = new_password) -> ComposeSecrets:
    """The secrets of a compose deployment in `directory`, made now where missing (see the module docstring)."""
    files = ComposeSecrets(directory)
    directory.mkdir(parents=True, exist_ok=True)
    env = _ensure_env(files.env_file, make_password)

    files.secrets_dir.mkdir(mode=0o700, exist_ok=True)
    files.secrets_dir.chmod(0o700)
    if not files.mongo_root_password.exists():
        _write_new(files.mongo_root_password, make_password(), 0o600)
    root = files.mongo_root_password.read_text(encoding="utf-8").strip()
    _check_password("the MongoDB root password", root, files.mongo_root_password)

    files.redis_acl.unlink(missing_ok=True)
    passwords = {service: env[name] for service, name in REDIS_PASSWORDS.items()}
    _write_new(files.redis_acl, redis_acl(passwords), 0o644)

    made = keys.ensure_keys(files.keys.directory)
    for readable in (made.issuer_public, made.service_public, made.service_private, made.page_token):
        readable.chmod(0o644)
    made.issuer_private.chmod(0o600)
    return files
