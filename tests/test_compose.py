"""docker-compose.yml and the Dockerfile, checked by reading them (no Docker engine runs the tests).

The compose file must start what the code expects: the service names, ports and environment variables
the Config classes read, MongoDB as an initiated replica set, Redis with an append-only file, and the
image's health check must really speak the gRPC health protocol (it is run here against a real server).

PyYAML is not a dependency, so a small parser reads the subset of YAML the compose file uses (block
mappings and sequences, quoted and plain scalars, JSON-style flow sequences, `|` block scalars); when
PyYAML happens to be importable, the parser is checked against it.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from infra.procs import free_port
from infra.stack import SERVICES

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
APP_SERVICES = {s.name: s for s in SERVICES}
#: Read by the image's HEALTHCHECK, not by the services.
HEALTH_PORT_VAR = "EVENTFLOW_HEALTH_PORT"


# -- a parser for the YAML subset of docker-compose.yml --------------------------------------------------


class _Lines:
    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.i = 0

    def peek(self) -> tuple[int, str] | None:
        """(indent, content) of the next line that is neither blank nor a comment."""
        while self.i < len(self.lines):
            raw = self.lines[self.i]
            content = raw.strip()
            if content and not content.startswith("#"):
                return len(raw) - len(raw.lstrip(" ")), content
            self.i += 1
        return None


def _scalar(text: str) -> Any:
    if text.startswith(("[", '"')):
        return json.loads(text)
    if text.startswith("'"):
        return text[1:-1].replace("''", "'")
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return {"true": True, "false": False, "null": None, "~": None}.get(text, text)


def _block_scalar(lines: _Lines, parent_indent: int) -> str:
    body: list[str] = []
    while lines.i < len(lines.lines):
        raw = lines.lines[lines.i]
        if raw.strip() and len(raw) - len(raw.lstrip(" ")) <= parent_indent:
            break
        body.append(raw)
        lines.i += 1
    indent = min(len(line) - len(line.lstrip(" ")) for line in body if line.strip())
    return "\n".join(line[indent:] for line in body).rstrip("\n") + "\n"


def _value(lines: _Lines, rest: str, indent: int) -> Any:
    if rest == "|":
        return _block_scalar(lines, indent)
    if rest:
        return _scalar(rest)
    following = lines.peek()
    if following is None or following[0] <= indent:
        return None
    return _block(lines, following[0])


def _block(lines: _Lines, indent: int) -> Any:
    first = lines.peek()
    assert first is not None
    if first[1].startswith("-"):
        items = []
        while (line := lines.peek()) and line[0] == indent and line[1].startswith("-"):
            item = line[1][1:].strip()
            if re.match(r"^[\w.-]+:( |$)", item):
                raise ValueError(f"line {lines.i + 1}: mappings inside sequences are outside the supported subset")
            lines.i += 1
            items.append(_value(lines, item, indent))
        return items
    mapping: dict[str, Any] = {}
    while (line := lines.peek()) and line[0] == indent and not line[1].startswith("-"):
        key, colon, rest = line[1].partition(":")
        if not colon or (rest and not rest.startswith(" ")):
            raise ValueError(f"line {lines.i + 1}: expected `key: value`, got {line[1]!r}")
        lines.i += 1
        mapping[key.strip()] = _value(lines, rest.strip(), indent)
    if (line := lines.peek()) and line[0] > indent:
        raise ValueError(f"line {lines.i + 1}: unexpected indentation")
    return mapping


def parse_compose(text: str) -> dict[str, Any]:
    lines = _Lines(text)
    document = _block(lines, 0)
    if lines.peek() is not None:
        raise ValueError(f"line {lines.i + 1}: not parsed")
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return parse_compose(COMPOSE.read_text(encoding="utf-8"))


def test_the_parser_agrees_with_pyyaml(compose: dict[str, Any]) -> None:
    yaml = pytest.importorskip("yaml")
    assert compose == yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


# -- docker-compose.yml -------------------------------------------------------------------------------------


def test_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"mongo", "mongo-init", "redis", *APP_SERVICES}
    assert set(compose["volumes"]) == {"mongo-data", "redis-data"}


SECRETS_DIR = "/run/secrets/"


def test_secrets_are_mounted_files_outside_the_image(compose: dict[str, Any]) -> None:
    """Keys come from files compose mounts at run time (in .data/, which .dockerignore keeps out of the build)."""
    ignored = {entry.strip("/") for entry in (ROOT / ".dockerignore").read_text(encoding="utf-8").split()}
    for name, secret in compose["secrets"].items():
        path = Path(secret["file"])
        assert path.parts[0] == ".data" and ".data" in ignored, (name, path)
    for name in APP_SERVICES:
        service = compose["services"][name]
        for var, value in service["environment"].items():
            if var.endswith("_FILE"):
                assert value.startswith(SECRETS_DIR), (name, var, value)
                assert value.removeprefix(SECRETS_DIR) in service["secrets"], (name, var)
                assert value.removeprefix(SECRETS_DIR) in compose["secrets"], (name, var)
        assert service["environment"]["EVENTFLOW_PAGE_TOKEN_KEY_FILE"] == f"{SECRETS_DIR}page_token_key"


def _as_mounted(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """`env` as the container sees it: each secret file a real file here (the secret's content is made up)."""
    mounted = dict(env)
    for var, value in env.items():
        if var.endswith("_FILE") and value.startswith(SECRETS_DIR):
            path = tmp_path / value.removeprefix(SECRETS_DIR)
            path.write_bytes(b"k" * 32)
            mounted[var] = str(path)
    return mounted


def test_mongo_is_an_initiated_single_node_replica_set(compose: dict[str, Any]) -> None:
    mongo, init = compose["services"]["mongo"], compose["services"]["mongo-init"]
    assert mongo["image"] == "mongo:7"
    assert mongo["command"][mongo["command"].index("--replSet") + 1] == "rs0"
    assert "mongo-data:/data/db" in mongo["volumes"]
    assert mongo["healthcheck"]["test"][0] == "CMD"

    assert init["image"] == "mongo:7"
    assert init["depends_on"] == {"mongo": {"condition": "service_healthy"}}
    script = init["command"][-1]
    # Idempotent: initiate only when the replica set is not initiated yet, then wait for a primary.
    assert "NotYetInitialized" in script and "rs.initiate(" in script
    assert "_id: 'rs0'" in script and "host: 'mongo:27017'" in script
    assert "isWritablePrimary" in script
    assert "$" not in script, "compose would interpolate $ in the script"


def test_redis_keeps_an_append_only_file(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"] == "redis:7"
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert "redis-data:/data" in redis["volumes"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def _read_env_vars(config_class: type, env: dict[str, str]) -> tuple[Any, set[str]]:
    """Config.from_env(env), and the names of the variables it read."""

    class Recording(dict[str, str]):
        def __init__(self, data: dict[str, str]) -> None:
            super().__init__(data)
            self.read: set[str] = set()

        def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
            self.read.add(key)
            return super().get(key, default)

        def __getitem__(self, key: str) -> str:
            self.read.add(key)
            return super().__getitem__(key)

        def __contains__(self, key: object) -> bool:
            self.read.add(str(key))
            return super().__contains__(key)

    recording = Recording(env)
    return config_class.from_env(recording), recording.read


@pytest.mark.parametrize("name", list(APP_SERVICES))
def test_service_matches_its_config(compose: dict[str, Any], name: str, tmp_path: Path) -> None:
    services = compose["services"]
    service, spec = services[name], APP_SERVICES[name]
    env = {key: str(value) for key, value in service["environment"].items()}

    assert service["build"] == "." and service["image"] == services["usuarios"]["image"]
    assert service["command"] == ["python", "-m", name]
    assert env[spec.port_var] == str(spec.default_port)
    assert service["ports"] == [f"{spec.default_port}:{spec.default_port}"]
    assert env[HEALTH_PORT_VAR] == str(spec.default_port)
    assert env["MONGODB_URI"] == "mongodb://mongo:27017/?replicaSet=rs0"
    assert service["depends_on"]["mongo"] == {"condition": "service_healthy"}
    assert service["depends_on"]["mongo-init"] == {"condition": "service_completed_successfully"}
    if name == "reservas":
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["USUARIOS_ADDR"] == f"usuarios:{APP_SERVICES['usuarios'].default_port}"
        assert env["EVENTOS_ADDR"] == f"eventos:{APP_SERVICES['eventos'].default_port}"
        for dependency in ("redis", "usuarios", "eventos"):
            assert service["depends_on"][dependency] == {"condition": "service_healthy"}

    try:
        config_module = importlib.import_module(f"{name}.config")
    except ModuleNotFoundError:
        pytest.skip(f"{name}/config.py does not exist yet")
    config, read = _read_env_vars(config_module.Config, _as_mounted(env, tmp_path))
    unknown = set(env) - read - {HEALTH_PORT_VAR}
    assert not unknown, f"docker-compose.yml sets variables {name}'s Config never reads: {sorted(unknown)}"
    assert config.port == spec.default_port
    assert config.mongodb_uri == env["MONGODB_URI"]


# -- Dockerfile ---------------------------------------------------------------------------------------------


def _instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_builds_a_wheel_and_runs_it_as_non_root() -> None:
    instructions = _instructions()
    stages = [i for i in instructions if i.startswith("FROM ")]
    assert len(stages) == 2 and stages[0].endswith(" AS build") and stages[1].endswith(" AS runtime")
    assert any(i.startswith("RUN pip wheel ") for i in instructions)
    users = [i.split()[1] for i in instructions if i.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    # Everything the wheel is built from is copied into the build stage (generated/ holds the stubs).
    copied = {i.split()[1].rstrip("/") for i in instructions if i.startswith("COPY ") and "--from" not in i}
    assert {"generated", "infra", *APP_SERVICES, "pyproject.toml"} <= copied


def _healthcheck_command() -> list[str]:
    line = next(i for i in _instructions() if i.startswith("HEALTHCHECK "))
    command = json.loads(line[line.index("CMD ") + 4 :])
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


@pytest.fixture
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, servicer
    server.stop(0)


def test_image_healthcheck_speaks_grpc_health(health_server: tuple[int, health.HealthServicer]) -> None:
    port, servicer = health_server
    command = _healthcheck_command()

    def check(at: int) -> int:
        env = {"EVENTFLOW_HEALTH_PORT": str(at), "PATH": "/usr/bin:/bin"}
        return subprocess.run(command, env=env, capture_output=True, timeout=30).returncode  # noqa: S603

    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert check(port) == 1
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert check(port) == 0
    assert check(free_port()) != 0  # nothing listening there


def test_dockerignore_keeps_local_state_out_of_the_build() -> None:
    ignored = set((ROOT / ".dockerignore").read_text(encoding="utf-8").split())
    assert {".venv", ".data", ".git"} <= {entry.strip("/") for entry in ignored}
