"""End to end: `eventflow up --tls`, driven by the real grpcurl with the flags the launcher prints.

One stack: the printed examples work as printed (the operator's certificate for usuarios, only the CA for
reservas, whose purchase reaches usuarios and eventos over mutual TLS), and what lacks the right certificate
is refused.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from eventflow import client
from eventflow.eventos.v1 import eventos_pb2
from eventflow.reservas.v1 import reservas_pb2
from eventflow.usuarios.v1 import usuarios_pb2
from test_e2e_stack import (
    GRPCURL,
    README,
    SERVICE_NAMES,
    SERVICES,
    StackUnderTest,
    _require_all_services,
    _stack_env,
    readme_examples,
    run_status,
)

from infra.procs import free_port

pytestmark = pytest.mark.e2e


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)  # noqa: S603


def test_eventflow_up_tls_serves_every_service_over_tls(tmp_path: Path) -> None:
    _require_all_services()
    ports = {name: free_port() for name in ["mongodb", "redis", *SERVICE_NAMES]}
    env = _stack_env(ports) | {"EVENTFLOW_TLS_CERT_FILE": "/nowhere.pem"}  # ignored: --tls decides
    under_test = StackUnderTest(env, tmp_path / "data", ports)
    try:
        output = under_test.launch("--tls").output
        certs_dir = under_test.data_dir / "certs"
        assert stat.S_IMODE(certs_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((certs_dir / "operator-key.pem").stat().st_mode) == 0o600

        # The printed examples run as printed: GetUsuario with the operator's certificate, Reservar with the CA.
        for method in ("/GetUsuario", "/Reservar"):
            printed = next(line for line in output.splitlines() if method in line)
            assert "-plaintext" not in printed and "-cacert" in printed
            result = under_test.run_printed(printed)
            assert result.returncode == 0, f"{printed}\n{result.stderr}"
        assert json.loads(result.stdout)["estado"] == "ESTADO_RESERVA_CONFIRMADA"
        reserva_id = json.loads(result.stdout)["id"]

        # The README's TLS examples, as written: from a directory whose .data is this stack's, ports filled in.
        (tmp_path / ".data").symlink_to("data")
        tls_examples = [e for e in readme_examples(README.read_text(encoding="utf-8")) if e.section == "TLS"]
        assert len(tls_examples) == 3
        for example in tls_examples:
            command = example.command
            for spec in SERVICES:
                command = command.replace(f"localhost:{spec.default_port}", under_test.address(spec.name))
            env = {**os.environ, "TOKEN": under_test.token, "PATH": f"{Path(GRPCURL).parent}:{os.environ['PATH']}"}
            ran = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,  # noqa: S603, S607
                                 timeout=60)  # fmt: skip
            assert ran.returncode == 0, f"README.md:{example.line}: {example.command}\n{ran.stderr}"

        ca = str(certs_dir / "ca.pem")
        # The Python client over TLS, as the README says: the CA, and the operator's certificate for the two
        # services that require one.
        credentials = client.tls_credentials(ca, cert=certs_dir / "operator.pem", key=certs_dir / "operator-key.pem")
        addresses = {name: under_test.address(name) for name in SERVICE_NAMES}
        with client.connect(**addresses, token=under_test.token, tls=credentials) as ef:
            assert ef.usuarios.ListUsuarios(usuarios_pb2.ListUsuariosRequest(page_size=1)).usuarios
            assert ef.eventos.ListEventos(eventos_pb2.ListEventosRequest(page_size=1)).eventos
            reserva = ef.reservas.GetReserva(reservas_pb2.GetReservaRequest(id=reserva_id))
            assert reserva.estado == reservas_pb2.ESTADO_RESERVA_CONFIRMADA
        usuarios = under_test.address("usuarios")
        # Refused: a plaintext dial never completes (grpcurl gives up at -connect-timeout), a TLS one without
        # a client certificate is closed by usuarios during the handshake.
        for refused in (
            ["-plaintext", usuarios, "list"],
            ["-cacert", ca, usuarios, "list"],
            ["-plaintext", under_test.address("reservas"), "list"],
        ):
            result = _run([GRPCURL, "-connect-timeout", "2", *refused])
            assert result.returncode != 0 and "Failed to dial" in result.stderr, (refused, result.stderr)

        # `eventflow status --tls` checks health and lists the events with the operator's certificate.
        status = run_status(under_test, "--tls", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        document = json.loads(status.stdout)
        assert {s["health"] for s in document["services"]} == {"SERVING"}
        assert document["eventos"]["source"] == "eventos" and document["eventos"]["on_sale"]
    finally:
        for launcher in under_test.launchers:
            launcher.cleanup()
