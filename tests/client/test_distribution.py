"""eventflow-client installs alone: its wheel holds the stubs and eventflow.client and nothing of the servers,
asks for nothing but gRPC and protobuf, and works in a fresh virtualenv where pymongo, redis and the server
packages do not exist. The server distribution ships none of the `eventflow` package.

Offline: the wheel is built with this virtualenv's setuptools (no build isolation) and installed with
--no-deps; the fresh virtualenv sees the four dependencies through a directory of links to this one's copies.
"""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "python"
GENERATED = ROOT / "generated" / "eventflow"
#: What eventflow-client may depend on, and the top-level modules those bring.
DEPENDENCIES = {"grpcio", "grpcio-status", "protobuf", "googleapis-common-protos"}
DEPENDENCY_MODULES = ["grpc", "grpc_status", "google", "typing_extensions.py"]
SERVER_MODULES = ["pymongo", "redis", "infra", "usuarios", "eventos", "reservas", "jwt", "prometheus_client"]


def _pip(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=120, cwd=cwd)  # noqa: S603
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy (its generated/ link followed), so the build leaves nothing in the repository.
    source = out / "source"
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    _pip("wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", str(out), str(source))
    [built] = out.glob("eventflow_client-*.whl")
    return built


def test_the_wheel_holds_every_stub_and_the_client_and_nothing_else(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    packaged = {n for n in names if ".dist-info/" not in n}
    stubs = {
        f"eventflow/{p.relative_to(GENERATED)}"
        for p in GENERATED.rglob("*")
        if p.is_file() and (p.suffix in {".py", ".pyi"} or p.name == "py.typed") and "__pycache__" not in p.parts
    }
    client = {f"eventflow/client/{p.name}" for p in (CLIENT / "src" / "eventflow" / "client").glob("*.py")}
    assert "eventflow/py.typed" in stubs and "eventflow/reservas/v1/reservas_pb2_grpc.pyi" in stubs
    assert packaged == stubs | client


def test_the_wheel_requires_only_grpc_and_protobuf(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        metadata_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(archive.read(metadata_name).decode())
    required = {Requirement(r).name for r in metadata.get_all("Requires-Dist") or []}
    assert required == DEPENDENCIES


def test_it_installs_and_calls_in_a_virtualenv_without_the_servers(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)  # noqa: S603
    python = venv / "bin" / "python"
    _pip("--python", str(python), "install", "--quiet", "--no-deps", "--no-index", str(wheel))
    # The dependencies, and only they, from this virtualenv: links in a directory the fresh one reads.
    deps = tmp_path / "deps"
    deps.mkdir()
    here = Path(sysconfig.get_paths()["purelib"])
    for module in DEPENDENCY_MODULES:
        (deps / module).symlink_to(here / module)
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.check_output([str(python), "-c", where], text=True).strip())  # noqa: S603
    (site / "deps.pth").write_text(f"{deps}\n")

    probe = textwrap.dedent(f"""
        import importlib.util, sys
        from pathlib import Path
        import eventflow.client as client
        from eventflow.reservas.v1 import reservas_pb2
        from eventflow.usuarios.v1 import usuarios_pb2
        site = Path({str(site)!r})
        assert Path(client.__file__).is_relative_to(site), client.__file__
        assert Path(reservas_pb2.__file__).is_relative_to(site), reservas_pb2.__file__
        missing = [m for m in {SERVER_MODULES!r} if importlib.util.find_spec(m) is None]
        assert missing == {SERVER_MODULES!r}, "importable here: " + str(set({SERVER_MODULES!r}) - set(missing))
        with client.connect("127.0.0.1", usuarios="127.0.0.1:1", token="t", max_attempts=2) as ef:
            try:
                ef.usuarios.GetUsuario(usuarios_pb2.GetUsuarioRequest(id="u-1"), timeout=5)
            except client.Unavailable as error:
                print("Unavailable", error.code().name)
        print(client.name(reservas_pb2.EstadoReserva, reservas_pb2.ESTADO_RESERVA_CONFIRMADA))
    """)
    result = subprocess.run([str(python), "-I", "-c", probe], capture_output=True, text=True, timeout=60)  # noqa: S603
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["Unavailable", "UNAVAILABLE", "CONFIRMADA"]


def test_the_server_distribution_ships_no_eventflow_package() -> None:
    """The servers get the stubs from eventflow-client: both would otherwise install eventflow/..."""
    import tomllib  # noqa: PLC0415

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    found = project["tool"]["setuptools"]["packages"]["find"]
    assert not any(pattern.startswith("eventflow") for pattern in found["include"])
    assert "package-dir" not in project["tool"]["setuptools"]
    assert any(Requirement(r).name == "eventflow-client" for r in project["project"]["dependencies"])
