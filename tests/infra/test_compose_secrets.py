"""`eventflow compose-secrets`: random passwords and the keys for docker compose, made once, kept private."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from infra.cli import main
from infra.compose_secrets import (
    ENV_PASSWORDS,
    PASSWORD_RULE,
    REDIS_PASSWORDS,
    ComposeSecretsError,
    ensure_compose_secrets,
    read_env_file,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_makes_every_password_and_key_with_private_modes(tmp_path: Path) -> None:
    files = ensure_compose_secrets(tmp_path)
    env = read_env_file(files.env_file)
    assert set(env) == set(ENV_PASSWORDS)
    assert all(PASSWORD_RULE.fullmatch(value) for value in env.values())
    assert len(set(env.values())) == len(env), "every account has a password of its own"
    root = files.mongo_root_password.read_text()
    assert PASSWORD_RULE.fullmatch(root) and root not in env.values()

    assert mode(files.env_file) == 0o600
    assert mode(files.secrets_dir) == 0o700 and mode(files.keys.directory) == 0o700
    assert mode(files.mongo_root_password) == 0o600
    assert mode(files.keys.issuer_private) == 0o600  # signs people's tokens: mounted in no container
    for readable in (files.keys.issuer_public, files.keys.service_public, files.keys.service_private,
                     files.keys.page_token, files.redis_acl):  # fmt: skip
        assert mode(readable) == 0o644, readable  # read in containers by their own user; secrets/ guards them


def test_redis_acl_holds_a_hash_of_each_password_not_the_password(tmp_path: Path) -> None:
    files = ensure_compose_secrets(tmp_path)
    env, acl = read_env_file(files.env_file), files.redis_acl.read_text()
    for service, name in REDIS_PASSWORDS.items():
        assert env[name] not in acl
        assert f"user {service} on #{hashlib.sha256(env[name].encode()).hexdigest()} " in acl


REDIS_PASSWORD = REDIS_PASSWORDS["reservas"]


def test_a_second_run_keeps_what_exists_and_adds_what_is_missing(tmp_path: Path) -> None:
    files = ensure_compose_secrets(tmp_path)
    env, root = files.env_file.read_text(), files.mongo_root_password.read_text()
    redis_password = read_env_file(files.env_file)[REDIS_PASSWORD]
    key = files.keys.service_private.read_bytes()

    ensure_compose_secrets(tmp_path)
    assert files.env_file.read_text() == env
    assert files.mongo_root_password.read_text() == root and files.keys.service_private.read_bytes() == key

    # A line removed by hand (to change that password before the first `docker compose up`) comes back new,
    # and a setting of the person's own stays.
    kept = [line for line in env.splitlines() if not line.startswith(REDIS_PASSWORD)]
    files.env_file.write_text("\n".join([*kept, "COMPOSE_PROJECT_NAME=mine"]))
    ensure_compose_secrets(tmp_path)
    again = read_env_file(files.env_file)
    assert again["COMPOSE_PROJECT_NAME"] == "mine"
    assert again[REDIS_PASSWORD] and again[REDIS_PASSWORD] != redis_password
    assert hashlib.sha256(again[REDIS_PASSWORD].encode()).hexdigest() in files.redis_acl.read_text()


@pytest.mark.parametrize("bad", ["short", "has$dollar-0123456789", "has space 0123456789", "p@ss:word/0123456789"])
def test_a_password_a_uri_cannot_carry_is_refused_naming_it(tmp_path: Path, bad: str) -> None:
    (tmp_path / ".env").write_text(f"{ENV_PASSWORDS[0]}={bad}\n")
    with pytest.raises(ComposeSecretsError, match=ENV_PASSWORDS[0]):
        ensure_compose_secrets(tmp_path)


def test_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compose-secrets", "--dir", str(tmp_path)]) == 0
    assert (tmp_path / ".env").exists() and (tmp_path / "secrets" / "keys" / "reservas.key").exists()
    assert "do not commit" in capsys.readouterr().out

    (tmp_path / ".env").write_text(f"{ENV_PASSWORDS[1]}=short\n")
    assert main(["compose-secrets", "--dir", str(tmp_path)]) == 1
    assert ENV_PASSWORDS[1] in capsys.readouterr().err


def test_secrets_stay_out_of_git_and_of_the_image() -> None:
    root = Path(__file__).resolve().parents[2]
    for ignore in (".gitignore", ".dockerignore"):
        entries = {line.strip().rstrip("/") for line in (root / ignore).read_text().splitlines()}
        assert {".env", "secrets"} <= entries, ignore
