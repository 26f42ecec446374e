"""Generate the Python stubs in generated/ from protos/: `python -m infra.protogen` (what `make protos` runs).

One command, shared by `make protos` and the drift test (tests/test_generated_drift.py), so the
committed stubs and the ones the test regenerates come from exactly the same protoc invocation.

grpcio-tools writes imports from the proto path: protos/eventflow/x/v1/x.proto becomes the module
eventflow.x.v1.x_pb2, found in generated/ (mapped as the eventflow package in pyproject.toml). So the
include path mirrors the Python package path, and no sys.path tricks are needed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GENERATED = ROOT / "generated"
#: The package protoc writes into, below the output directory.
PACKAGE = "eventflow"


def _plugin(name: str) -> str:
    """A protoc plugin installed beside this interpreter (mypy-protobuf's), else one on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found: install the development dependencies (`make install`)")
    return found


def proto_files(protos: Path = PROTOS) -> list[Path]:
    return sorted(protos.rglob("*.proto"))


def protoc_command(out_dir: Path, protos: Path = PROTOS) -> list[str]:
    """The protoc invocation: messages, services and their .pyi type stubs, into out_dir."""
    files = [str(p.relative_to(protos)) for p in proto_files(protos)]
    if not files:
        raise FileNotFoundError(f"no .proto files under {protos}")
    return [
        sys.executable, "-m", "grpc_tools.protoc",
        f"-I{protos}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *files,
    ]  # fmt: skip


def generate(out_dir: Path, protos: Path = PROTOS) -> Path:
    """Write a fresh out_dir/eventflow/... (replacing any previous one) and return it."""
    package = out_dir / PACKAGE
    shutil.rmtree(package, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Relative proto names (resolved against -I) keep the `source:` comments free of local paths.
    result = subprocess.run(protoc_command(out_dir, protos), cwd=protos, capture_output=True, text=True)  # noqa: S603
    if result.returncode != 0:
        raise RuntimeError(f"protoc failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    # Every directory of the generated tree is a regular package, and the package is typed (PEP 561: the
    # .pyi stubs of mypy-protobuf, and eventflow.client in clients/python, which ships beside them).
    for directory in [package, *(d for d in package.rglob("*") if d.is_dir())]:
        (directory / "__init__.py").touch()
    (package / "py.typed").touch()
    return package


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.protogen", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=GENERATED, help="output directory (default: generated/)")
    args = parser.parse_args(argv)
    package = generate(args.out)
    print(f"generated {sum(1 for p in package.rglob('*') if p.is_file())} files in {package}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
