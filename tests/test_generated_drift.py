"""generated/ must be exactly what `make protos` makes of protos/: regenerate into a temp dir and compare.

The toolchain stamps its own version into the stubs (protoc's "Protobuf Python Version" and runtime check,
grpcio-tools' GRPC_GENERATED_VERSION). Those lines are compared without the numbers, so a machine with a
newer grpcio-tools still passes while any change of protos/ that was not regenerated fails.
"""

from __future__ import annotations

import re
from pathlib import Path

from infra import protogen

_VERSION_STAMPS = [
    (re.compile(r"^(# Protobuf Python Version:).*$", re.M), r"\1 <version>"),
    (
        re.compile(r"(_runtime_version\.ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.\w+,)"
                   r"\s*\d+,\s*\d+,\s*\d+,\s*'[^']*',"),
        r"\1 <version>",
    ),
    (re.compile(r"^(GRPC_GENERATED_VERSION = ).*$", re.M), r"\1<version>"),
]  # fmt: skip


def _normalized(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    for pattern, replacement in _VERSION_STAMPS:
        text = pattern.sub(replacement, text)
    return text


def _tree(root: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(root)): p
        for p in root.rglob("*")
        if p.is_file() and p.suffix in {".py", ".pyi"} and "__pycache__" not in p.parts
    }


def test_generated_matches_protos(tmp_path: Path) -> None:
    fresh = _tree(protogen.generate(tmp_path))
    committed = _tree(protogen.GENERATED / protogen.PACKAGE)

    hint = "generated/ is out of date with protos/: run `make protos` and commit the result"
    assert sorted(committed) == sorted(fresh), hint
    stale = [name for name in sorted(fresh) if _normalized(fresh[name]) != _normalized(committed[name])]
    assert not stale, f"{hint} (differs: {', '.join(stale)})"


def test_every_proto_has_its_stubs() -> None:
    """Each .proto gives a _pb2.py, a _pb2_grpc.py and their .pyi stubs, as the services import them."""
    committed = _tree(protogen.GENERATED / protogen.PACKAGE)
    for proto in protogen.proto_files():
        stem = str(proto.relative_to(protogen.PROTOS / protogen.PACKAGE).with_suffix(""))
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi"):
            assert stem + suffix in committed, f"missing generated/{protogen.PACKAGE}/{stem}{suffix}"


def test_drift_is_detected(tmp_path: Path) -> None:
    """The comparison is not vacuous: a changed comment in a proto changes the stubs."""
    protos = tmp_path / "protos"
    for proto in protogen.proto_files():
        target = protos / proto.relative_to(protogen.PROTOS)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(proto.read_text(encoding="utf-8"), encoding="utf-8")
    first = protogen.proto_files(protos)[0]
    first.write_text(first.read_text(encoding="utf-8") + "\n// drift\nmessage DriftProbe {}\n", encoding="utf-8")

    fresh = _tree(protogen.generate(tmp_path / "out", protos))
    committed = _tree(protogen.GENERATED / protogen.PACKAGE)
    assert any(_normalized(fresh[name]) != _normalized(committed[name]) for name in fresh)
