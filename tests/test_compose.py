"""docker-compose.yml and the Dockerfile, checked by reading them (no Docker engine runs the tests).

The compose file must start what the code expects: the service names, ports and environment variables
the Config classes read, MongoDB as an initiated replica set with a user per service, Redis with an
append-only file and a password, neither published on the host, every secret from `eventflow
compose-secrets` (no default in the file), and the image's health check must really speak the gRPC health
protocol (it is run here against a real server). tests/test_compose_stores.py runs the services against
stores set up as compose sets them up.
docker-compose.tls.yml, the TLS override, must hand each service exactly the files `eventflow certs` makes
for it, at the paths its Config reads, and the health check must pass over mutual TLS.

A small parser reads the subset of YAML the compose files use (block mappings and sequences, quoted and
plain scalars, JSON-style flow sequences, `|` block scalars), which keeps them plain; it is checked against
PyYAML (a development dependency) on every compose file of the repository.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from infra.compose_secrets import ENV_PASSWORDS, MONGO_PASSWORDS, REDIS_KEYS, REDIS_PASSWORDS, ComposeSecrets
from infra.compose_secrets import ensure_compose_secrets, read_env_file
from infra.keys import PAGE_TOKEN_KEY
from infra.metrics import DEFAULT_PORTS
from infra import certs, tls
from infra.procs import free_port
from infra.stack import SERVICES

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_TLS = ROOT / "docker-compose.tls.yml"
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


@pytest.mark.parametrize("path", sorted(ROOT.glob("docker-compose*.yml")), ids=lambda p: p.name)
def test_the_parser_agrees_with_pyyaml(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert parse_compose(text) == yaml.safe_load(text)


#: ${NAME:?message}: compose stops with the message when NAME is unset or empty.
REQUIRED = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*):\?(?P<message>[^}]+)\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """What compose makes of `value` with the variables `env` (only the ${NAME:?message} form is used)."""
    return REQUIRED.sub(lambda m: env[m["name"]], value)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> ComposeSecrets:
    """What `eventflow compose-secrets` writes, in a directory of its own."""
    return ensure_compose_secrets(tmp_path_factory.mktemp("compose"))


@pytest.fixture(scope="module")
def dotenv(made: ComposeSecrets) -> dict[str, str]:
    return read_env_file(made.env_file)


# -- docker-compose.yml -------------------------------------------------------------------------------------


def test_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"mongo", "mongo-init", "redis", *APP_SERVICES}
    assert set(compose["volumes"]) == {"mongo-data", "redis-data"}


def test_no_store_is_published_on_the_host(compose: dict[str, Any]) -> None:
    for name in ("mongo", "mongo-init", "redis"):
        assert "ports" not in compose["services"][name], f"{name} must be reachable only on compose's network"


def test_every_variable_is_required_and_made_by_compose_secrets(dotenv: dict[str, str]) -> None:
    """No password has a default: each ${...} is ${NAME:?message}, and compose-secrets writes every NAME."""
    lines = COMPOSE.read_text(encoding="utf-8").splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))  # compose reads no comment
    assert text.count("${") == len(REQUIRED.findall(text)), "every ${...} must be ${NAME:?message}"
    names = {m["name"] for m in REQUIRED.finditer(text)}
    assert names == set(ENV_PASSWORDS)
    for m in REQUIRED.finditer(text):
        assert "compose-secrets" in m["message"], "the message says how to make the variable"
    assert set(dotenv) == set(ENV_PASSWORDS) and all(dotenv.values())


def test_every_secret_file_is_made_by_compose_secrets(compose: dict[str, Any], made: ComposeSecrets) -> None:
    declared = compose["secrets"]
    for name, secret in declared.items():
        assert set(secret) == {"file"}, name
        assert (made.directory / secret["file"]).is_file(), f"compose-secrets does not make {secret['file']}"
    used = {s for service in compose["services"].values() for s in service.get("secrets", [])}
    assert used == set(declared)
    # The key that signs people's tokens is no container's business.
    assert str(made.keys.issuer_private.relative_to(made.directory)) not in {
        str(Path(s["file"])) for s in declared.values()
    }


def test_mongo_is_an_initiated_single_node_replica_set_with_authentication(compose: dict[str, Any]) -> None:
    mongo, init = compose["services"]["mongo"], compose["services"]["mongo-init"]
    assert mongo["image"] == "mongo:7"
    command = mongo["command"]
    assert command[0] == "mongod"
    assert command[command.index("--replSet") + 1] == "rs0"
    # Authentication on a replica set needs a key file: the wrapper makes it where --keyFile says.
    entrypoint = ROOT / mongo["volumes"][1].split(":")[0]
    wrapper = entrypoint.read_text(encoding="utf-8")
    assert mongo["entrypoint"] == ["bash", mongo["volumes"][1].split(":")[1]]
    assert command[command.index("--keyFile") + 1] == "/run/eventflow/keyfile" and '"$private/keyfile"' in wrapper
    assert "/run/eventflow" in mongo["tmpfs"]
    assert wrapper.rstrip().endswith('exec docker-entrypoint.sh "$@"')
    # Root credentials: the image's entrypoint reads the password from a file (the wrapper's readable copy).
    assert mongo["environment"]["MONGO_INITDB_ROOT_USERNAME"] == "root"
    assert "MONGO_INITDB_ROOT_PASSWORD" not in mongo["environment"]
    assert "export MONGO_INITDB_ROOT_PASSWORD_FILE=" in wrapper and "/run/secrets/mongo_root_password" in wrapper
    assert mongo["secrets"] == ["mongo_root_password"]
    assert "mongo-data:/data/db" in mongo["volumes"]
    assert "./compose/mongo/initdb:/docker-entrypoint-initdb.d:ro" in mongo["volumes"]
    # Healthy only as a replica-set member: not the image's temporary mongod that runs the init script.
    assert mongo["healthcheck"]["test"][0] == "CMD" and "isreplicaset" in mongo["healthcheck"]["test"][-1]

    assert init["image"] == "mongo:7"
    assert init["depends_on"] == {"mongo": {"condition": "service_healthy"}}
    assert init["entrypoint"] == ["mongosh"] and init["secrets"] == ["mongo_root_password"]
    script = init["command"][-1]
    # As root, with the password read from the mounted secret, not from the command line.
    root = mongo["environment"]["MONGO_INITDB_ROOT_USERNAME"]
    assert f".auth('{root}', fs.readFileSync('/run/secrets/mongo_root_password', 'utf8').trim())" in script
    # Idempotent: initiate only when the replica set is not initiated yet, then wait for a primary.
    assert "NotYetInitialized" in script and "rs.initiate(" in script
    assert "_id: 'rs0'" in script and "host: 'mongo:27017'" in script
    assert "isWritablePrimary" in script
    assert "$" not in script, "compose would interpolate $ in the script"


def test_redis_keeps_an_append_only_file_and_requires_its_user(compose: dict[str, Any], made: ComposeSecrets) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"] == "redis:7"
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--aclfile") + 1] == "/run/secrets/redis_acl"
    assert redis["secrets"] == ["redis_acl"]
    assert compose["secrets"]["redis_acl"]["file"] == f"./{made.redis_acl.relative_to(made.directory)}"
    assert "redis-data:/data" in redis["volumes"]
    # The check needs no password: unauthenticated, a live Redis answers NOAUTH.
    assert redis["healthcheck"]["test"][0] == "CMD-SHELL" and "NOAUTH" in redis["healthcheck"]["test"][1]
    acl = made.redis_acl.read_text(encoding="utf-8").splitlines()
    assert acl[0] == "user default off"
    users = {line.split()[1]: line for line in acl[1:]}
    assert set(users) == set(APP_SERVICES) == set(REDIS_PASSWORDS)
    for service, line in users.items():
        assert line.startswith(f"user {service} on #") and line.endswith(" +@all -@dangerous")
        assert f" ~{REDIS_KEYS[service]} " in line


def _node() -> str:
    import shutil  # noqa: PLC0415

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the init script cannot be run here")
    return node


#: What mongosh gives the init script, enough of it to run it: the calls are printed as JSON lines.
MONGOSH_SHIM = """
const calls = [];
globalThis.print = (...args) => {};
globalThis.db = { getSiblingDB: (name) => ({ createUser: (spec) => calls.push({ db: name, ...spec }) }) };
try {
  require('vm').runInThisContext(require('fs').readFileSync(process.argv[1], 'utf8'));
} finally {
  console.log(JSON.stringify(calls));
}
"""


def run_init_script(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = ROOT / "compose" / "mongo" / "initdb" / "10-eventflow-users.js"
    return subprocess.run(  # noqa: S603
        [_node(), "-e", MONGOSH_SHIM, str(script)], env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def mongo_users(env: dict[str, str]) -> list[dict[str, Any]]:
    """The createUser calls of compose's MongoDB init script, run with `env` as its environment."""
    result = run_init_script(env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_mongo_init_script_gives_each_service_its_own_database_only(
    compose: dict[str, Any], dotenv: dict[str, str]
) -> None:
    mongo_env = {k: interpolate(str(v), dotenv) for k, v in compose["services"]["mongo"]["environment"].items()}
    users = {u["user"]: u for u in mongo_users(mongo_env)}
    assert set(users) == set(APP_SERVICES) == set(MONGO_PASSWORDS)
    for name, user in users.items():
        database = importlib.import_module(f"{name}.config").Config.mongodb_database
        assert user["db"] == "admin"
        assert user["roles"] == [{"role": "readWrite", "db": database}]
        assert user["pwd"] == dotenv[MONGO_PASSWORDS[name]]


@pytest.mark.parametrize("password", ["", "short", "with space in it", "dollar$dollar$dollar", "p@ss:w0rd/0123456789"])
def test_mongo_init_script_refuses_a_password_a_uri_cannot_carry(dotenv: dict[str, str], password: str) -> None:
    result = run_init_script({**dotenv, MONGO_PASSWORDS["eventos"]: password})
    assert result.returncode != 0
    assert MONGO_PASSWORDS["eventos"] in result.stderr and "compose-secrets" in result.stderr


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
def test_service_matches_its_config(
    compose: dict[str, Any], made: ComposeSecrets, dotenv: dict[str, str], name: str
) -> None:
    services = compose["services"]
    service, spec = services[name], APP_SERVICES[name]
    env = {key: interpolate(str(value), dotenv) for key, value in service["environment"].items()}

    assert service["build"] == "." and service["image"] == services["usuarios"]["image"]
    assert service["command"] == ["python", "-m", name]
    assert env[spec.port_var] == str(spec.default_port)
    # gRPC on the host; /metrics (unauthenticated) on its loopback only, for `eventflow status` and a local Prometheus.
    metrics = DEFAULT_PORTS[name]
    assert service["ports"] == [f"{spec.default_port}:{spec.default_port}", f"127.0.0.1:{metrics}:{metrics}"]
    assert env[spec.metrics_var] == str(metrics)
    assert env[HEALTH_PORT_VAR] == str(spec.default_port)
    # Containers listen on every interface of their own network namespace; the default is loopback.
    assert env["GRPC_BIND_HOST"] == "0.0.0.0"  # noqa: S104
    # Its own MongoDB user, whose password is the one the init script gave that user.
    password = dotenv[MONGO_PASSWORDS[name]]
    assert env["MONGODB_URI"] == f"mongodb://{name}:{password}@mongo:27017/?replicaSet=rs0&authSource=admin"
    assert service["depends_on"]["mongo"] == {"condition": "service_healthy"}
    assert service["depends_on"]["mongo-init"] == {"condition": "service_completed_successfully"}
    # Its own Redis user (rate limits in all three; holds and the gate in reservas).
    assert env["REDIS_URL"] == f"redis://{name}:{dotenv[REDIS_PASSWORDS[name]]}@redis:6379/0"
    assert service["depends_on"]["redis"] == {"condition": "service_healthy"}
    # The keys, as files mounted from secrets/keys (read here where compose-secrets made them); a service mounts
    # no secret it does not read, and reservas' private key is mounted in reservas only.
    key_env = {k: v for k, v in env.items() if k.startswith("EVENTFLOW_") and k.endswith("_KEY_FILE")}
    for variable, path in key_env.items():
        secret = path.removeprefix("/run/secrets/")
        assert secret in service["secrets"], f"{name} reads {path} but does not mount the secret {secret}"
        env[variable] = str(made.directory / compose["secrets"][secret]["file"])
    assert set(service["secrets"]) == {path.removeprefix("/run/secrets/") for path in key_env.values()}
    assert ("EVENTFLOW_SERVICE_PRIVATE_KEY_FILE" in key_env) == (name == "reservas")
    if name == "reservas":
        assert env["USUARIOS_ADDR"] == f"usuarios:{APP_SERVICES['usuarios'].default_port}"
        assert env["EVENTOS_ADDR"] == f"eventos:{APP_SERVICES['eventos'].default_port}"
        for dependency in ("redis", "usuarios", "eventos"):
            assert service["depends_on"][dependency] == {"condition": "service_healthy"}

    try:
        config_module = importlib.import_module(f"{name}.config")
    except ModuleNotFoundError:
        pytest.skip(f"{name}/config.py does not exist yet")
    config, read = _read_env_vars(config_module.Config, env)
    unknown = set(env) - read - {HEALTH_PORT_VAR}
    assert not unknown, f"docker-compose.yml sets variables {name}'s Config never reads: {sorted(unknown)}"
    assert config.port == spec.default_port
    assert config.metrics_port == DEFAULT_PORTS[name]
    assert config.mongodb_uri == env["MONGODB_URI"]
    # Every key its Config looks for, it gets (as a file), the page-token key among them; TLS is optional
    # (docker-compose.tls.yml gives it).
    assert {v for v in read if v.endswith("_KEY_FILE") and not v.startswith("EVENTFLOW_TLS_")} <= set(key_env)
    assert f"{PAGE_TOKEN_KEY}_FILE" in read and config.page_token_key


# -- docker-compose.tls.yml ---------------------------------------------------------------------------------

SECRETS_DIR = "/run/secrets/"


@pytest.fixture(scope="module")
def compose_tls() -> dict[str, Any]:
    return parse_compose(COMPOSE_TLS.read_text(encoding="utf-8"))


#: Where `eventflow certs --dir secrets/certs` puts the files the TLS override mounts (beside compose-secrets').
CERTS_DIR = "./secrets/certs"


def _tls_files(name: str) -> dict[str, str]:
    """{variable: file} that service `name` must get, as `eventflow certs` names them in CERTS_DIR."""
    own = certs.files(Path(CERTS_DIR), name)
    wanted = {tls.CERT_VAR: own.cert, tls.KEY_VAR: own.key, tls.CA_VAR: Path(CERTS_DIR) / "ca.pem"}
    if name == "reservas":
        client = certs.files(Path(CERTS_DIR), certs.RESERVAS_CLIENT)
        wanted |= {tls.CLIENT_CERT_VAR: client.cert, tls.CLIENT_KEY_VAR: client.key}
    return {var: f"./{path}" for var, path in wanted.items()}


@pytest.mark.parametrize("name", list(APP_SERVICES))
def test_tls_override_mounts_each_service_its_own_files_only(compose_tls: dict[str, Any], name: str) -> None:
    assert set(compose_tls["services"]) == set(APP_SERVICES)
    service, secrets = compose_tls["services"][name], compose_tls["secrets"]
    env = service["environment"]
    # Every file variable names a secret of this service, mounted from the file eventflow certs makes.
    mounted = {
        var: secrets[path.removeprefix(SECRETS_DIR)]["file"]
        for var, path in env.items()
        if var.endswith("_FILE") and path.removeprefix(SECRETS_DIR) in service["secrets"]
    }
    assert mounted == _tls_files(name)
    assert sorted(service["secrets"]) == sorted({env[var].removeprefix(SECRETS_DIR) for var in mounted})
    assert env[tls.REQUIRE_CLIENT_CERT_VAR] == ("false" if name == "reservas" else "true")
    # Keys keep their host owner and mode (0600) inside the container: the service runs as their owner.
    assert service["user"].startswith("${EVENTFLOW_UID:?") and ":${EVENTFLOW_GID:?" in service["user"]
    assert "$(" not in service["user"]  # compose would refuse it as an interpolation


def test_tls_override_never_mounts_the_ca_key(compose_tls: dict[str, Any]) -> None:
    files = [secret["file"] for secret in compose_tls["secrets"].values()]
    assert all(f.startswith(f"{CERTS_DIR}/") for f in files)
    assert f"{CERTS_DIR}/ca-key.pem" not in files and f"{CERTS_DIR}/operator-key.pem" not in files
    assert "secrets" in (ROOT / ".dockerignore").read_text(encoding="utf-8").split()  # nor in the build context


@pytest.mark.parametrize("name", list(APP_SERVICES))
def test_tls_override_gives_each_config_a_working_tls(
    compose: dict[str, Any],
    compose_tls: dict[str, Any],
    made: ComposeSecrets,
    dotenv: dict[str, str],
    name: str,
    tls_certs: Path,
) -> None:
    """Both files' environments merged, each secret read where compose-secrets and eventflow certs made it."""

    def on_host(env: dict[str, Any], secrets: dict[str, Any], where: Callable[[str], Path]) -> dict[str, str]:
        return {
            key: str(where(secrets[value.removeprefix(SECRETS_DIR)]["file"]))
            if str(value).startswith(SECRETS_DIR) else interpolate(str(value), dotenv)
            for key, value in env.items()
        }  # fmt: skip

    env = on_host(compose["services"][name]["environment"], compose["secrets"], lambda file: made.directory / file)
    tls_env = compose_tls["services"][name]["environment"]
    env |= on_host(tls_env, compose_tls["secrets"], lambda file: tls_certs / Path(file).name)
    config, read = _read_env_vars(importlib.import_module(f"{name}.config").Config, env)
    unknown = set(env) - read - {HEALTH_PORT_VAR, f"{PAGE_TOKEN_KEY}_FILE"}
    assert not unknown, f"the TLS override sets variables {name}'s Config never reads: {sorted(unknown)}"
    assert config.tls is not None
    assert config.tls.require_client_cert == (name != "reservas")
    assert (config.tls.client is not None) == (name == "reservas")


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


def test_image_healthcheck_speaks_tls_with_the_services_own_certificate(tls_certs: Path, tmp_path: Path) -> None:
    """Under the TLS override usuarios requires a client certificate: the check presents usuarios' own."""
    own = certs.files(tls_certs, "usuarios")
    config = tls.load(cert_file=own.cert, key_file=own.key, ca_file=tls_certs / "ca.pem", require_client_cert=True)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", config.server_credentials())
    server.start()
    try:
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        command = _healthcheck_command()
        env = {HEALTH_PORT_VAR: str(port), "PATH": "/usr/bin:/bin"}
        tls_env = {tls.CERT_VAR: str(own.cert), tls.KEY_VAR: str(own.key), tls.CA_VAR: str(tls_certs / "ca.pem")}

        def check(extra: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(command, env=env | extra, capture_output=True, timeout=30)  # noqa: S603

        assert check(tls_env).returncode == 0, check(tls_env).stderr
        assert check({}).returncode == 1  # plaintext: refused
        broken = check(tls_env | {tls.KEY_VAR: str(tmp_path / "missing.pem")})
        assert broken.returncode == 1 and tls.KEY_VAR.encode() in broken.stderr
    finally:
        server.stop(0)


def test_dockerignore_keeps_local_state_out_of_the_build() -> None:
    ignored = set((ROOT / ".dockerignore").read_text(encoding="utf-8").split())
    assert {".venv", ".data", ".git"} <= {entry.strip("/") for entry in ignored}
