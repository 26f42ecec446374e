"""The README's Python section is examples/purchase.py, word for word (tests/e2e runs the example against a
stack), and the names it documents are those eventflow.client exports."""

from __future__ import annotations

import re
from pathlib import Path

import eventflow.client
from eventflow.eventos.v1 import eventos_pb2
from eventflow.reservas.v1 import reservas_pb2
from eventflow.usuarios.v1 import usuarios_pb2

ROOT = Path(__file__).resolve().parents[2]


def _python_section() -> str:
    readme = ROOT.joinpath("README.md").read_text(encoding="utf-8")
    start = readme.index("\n## Python\n")
    return readme[start : readme.index("\n## ", start + 1)]


def test_the_readme_purchase_is_examples_purchase_py() -> None:
    blocks = re.findall(r"```python\n(.*?)```", _python_section(), re.S)
    assert blocks, "no python block in the README's Python section"
    assert blocks[0] == ROOT.joinpath("examples", "purchase.py").read_text(encoding="utf-8")
    assert len(blocks[0].splitlines()) <= 25  # "a complete purchase in about 20 lines"


def test_every_name_the_section_documents_exists() -> None:
    """Each `Name` the section shows is exported by eventflow.client or is an RPC, message or enum of the
    services (or a protobuf well-known name), and every function it calls is exported."""
    prose = re.sub(r"```.*?```", "", _python_section(), flags=re.S)
    spans = re.findall(r"`([^`]+)`", prose)
    called = {name for span in spans for name in re.findall(r"\b([a-z_]+)\(", span)}
    named = {span for span in spans if re.fullmatch(r"[A-Z][A-Za-z]+", span)}
    known = set(eventflow.client.__all__) | {"ErrorInfo", "RetryInfo", "Timestamp"}
    for module in (usuarios_pb2, eventos_pb2, reservas_pb2):
        known |= set(module.DESCRIPTOR.message_types_by_name) | set(module.DESCRIPTOR.enum_types_by_name)
        for service in module.DESCRIPTOR.services_by_name.values():
            known |= {method.name for method in service.methods}
    functions = {"connect", "connect_async", "timestamp", "to_datetime", "name", "value", "tls_credentials"}
    assert functions <= called, f"not shown: {functions - called}"
    methods = {n for n in dir(eventflow.client.EventFlowError) if not n.startswith("_")}
    assert called <= set(eventflow.client.__all__) | methods, called - set(eventflow.client.__all__) - methods
    assert named <= known, named - known
    assert {"SoldOut", "PaymentDeclined", "NotFound"} <= named
