"""What listens where: the embedded stores on loopback only, the services on loopback unless told otherwise.

Checked on the real listening sockets (/proc/net/tcp and tcp6, which list every socket of this network
namespace), not on the command lines that asked for them.
"""

from __future__ import annotations

import dataclasses
import importlib
import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import procs
from infra.cli import build_parser
from infra.stack import SERVICES, Options, Stack

LISTEN = "0A"
LOOPBACK = ipaddress.ip_address("127.0.0.1")


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as /proc/net/tcp* prints it: 32-bit words in host (little-endian) byte order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def listening_addresses(port: int) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every local address a socket listens on at `port`, IPv4 and IPv6."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            hex_address, hex_port = local.split(":")
            if state == LISTEN and int(hex_port, 16) == port:
                found.add(_address(hex_address))
    return found


def test_the_proc_reader_sees_a_wildcard_listener() -> None:
    """The helper itself: a socket on 0.0.0.0 is seen as such (so the loopback checks below can fail)."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))  # noqa: S104 - the point of this check
        s.listen()
        assert listening_addresses(s.getsockname()[1]) == {ipaddress.ip_address("0.0.0.0")}


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[list[procs.ManagedProcess]]:
    started = [
        procs.mongo_process(procs.free_port(), tmp_path / "mongodb", tmp_path / "mongodb.log").start(),
        procs.redis_process(procs.free_port(), tmp_path / "redis", tmp_path / "redis.log").start(),
    ]
    try:
        yield started
    finally:
        for process in started:
            process.stop()


def test_embedded_stores_listen_on_loopback_only(stores: list[procs.ManagedProcess]) -> None:
    """SecantusDB and redis-server as `eventflow up` and the fixtures start them (with persistent data)."""
    for store in stores:
        store.wait_listening()
        assert listening_addresses(store.port) == {LOOPBACK}, f"{store.name} listens beyond loopback"


@pytest.mark.parametrize("service", [s.name for s in SERVICES])
def test_services_bind_loopback_unless_told_otherwise(service: str) -> None:
    config = importlib.import_module(f"{service}.config").Config
    default = next(f.default for f in dataclasses.fields(config) if f.name == "bind_host")
    assert default == "127.0.0.1"


async def test_a_service_started_with_its_defaults_listens_on_loopback_only(mongo_uri: str) -> None:
    from usuarios.config import Config  # noqa: PLC0415
    from usuarios.server import create_app  # noqa: PLC0415

    from callers import KEY_ENV  # noqa: PLC0415 - this session's keys: a service has no default ones

    app = await create_app(Config.from_env({"USUARIOS_PORT": "0", "MONGODB_URI": mongo_uri, **KEY_ENV}))
    await app.start()
    try:
        assert listening_addresses(app.port) == {LOOPBACK}
    finally:
        await app.stop(grace=0)


def test_eventflow_up_binds_loopback_by_default_and_host_moves_it(tmp_path: Path) -> None:
    assert build_parser().parse_args(["up"]).host == "127.0.0.1"

    # Stack.bind_host is what service_env gives the services as GRPC_BIND_HOST.
    assert Stack(Options(data_dir=tmp_path), env={}).bind_host == "127.0.0.1"

    everywhere = Stack(Options(data_dir=tmp_path, host="0.0.0.0"), env={})  # noqa: S104
    assert everywhere.bind_host == "0.0.0.0"  # noqa: S104
    assert everywhere.address("usuarios") == "127.0.0.1:50051"  # clients reach a wildcard bind through loopback

    assert Stack(Options(data_dir=tmp_path, host="::1"), env={}).bind_host == "[::1]"
