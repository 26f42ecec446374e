"""The page-token key is the deployment's: no service starts without one, and the message says which variable."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from infra import procs
from infra.keys import KeyConfigError, page_token_key
from callers import KEY_ENV_WITHOUT_PAGE_TOKEN_KEY


def _env_without_a_page_token_key() -> dict[str, str]:
    """The test's environment with every other key a service needs (those are checked first), but this one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTFLOW_PAGE_TOKEN_KEY")}
    return {**env, **KEY_ENV_WITHOUT_PAGE_TOKEN_KEY}


@pytest.mark.parametrize("service", ["usuarios", "eventos", "reservas"])
def test_python_dash_m_refuses_to_start_without_a_page_token_key(service: str) -> None:
    """Without EVENTFLOW_PAGE_TOKEN_KEY[_FILE] the process exits at once (before connecting to anything)."""
    env = _env_without_a_page_token_key()
    env[f"{service.upper()}_PORT"] = str(procs.free_port())
    done = subprocess.run([sys.executable, "-m", service], env=env, capture_output=True, text=True, timeout=60)  # noqa: S603
    assert done.returncode == 2
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any(line["level"] == "ERROR" and "EVENTFLOW_PAGE_TOKEN_KEY" in line["msg"] for line in lines), done.stderr


@pytest.mark.parametrize("service", ["usuarios", "eventos", "reservas"])
def test_an_unreadable_key_file_is_named(service: str, tmp_path) -> None:
    missing = tmp_path / "nope.key"
    env = _env_without_a_page_token_key()
    env.update({f"{service.upper()}_PORT": str(procs.free_port()), "EVENTFLOW_PAGE_TOKEN_KEY_FILE": str(missing)})
    done = subprocess.run([sys.executable, "-m", service], env=env, capture_output=True, text=True, timeout=60)  # noqa: S603
    assert done.returncode == 2
    assert "EVENTFLOW_PAGE_TOKEN_KEY_FILE" in done.stderr and "cannot be read" in done.stderr
    # The error names the file; the log line does not show it, as it shows no value of a variable whose name
    # says "token" (infra/redact.py).
    with pytest.raises(KeyConfigError, match=f"EVENTFLOW_PAGE_TOKEN_KEY_FILE={missing} cannot be read"):
        page_token_key(env)
