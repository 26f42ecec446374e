"""TLS on a real gRPC server (infra.server's skeleton) with certificates made by `eventflow certs`.

Who gets through: a caller with the deployment's client certificate; not a plaintext caller, not one with a
certificate from another CA, not one without a certificate where one is required; and a caller never trusts
a server whose certificate comes from another CA. Then the configuration: what is read from the environment,
and every incomplete or unusable setting refused with a message naming the variable and the file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from callers import AUTH, KEY_ENV
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eventos.config import Config as EventosConfig
from infra import certs, tls
from infra.server import GrpcApp, create_server
from reservas.config import Config as ReservasConfig
from usuarios.config import Config as UsuariosConfig


def server_tls(directory: Path, service: str = "usuarios", require_client_cert: bool = True) -> tls.TLSConfig:
    own = certs.files(directory, service)
    return tls.load(
        cert_file=own.cert, key_file=own.key, ca_file=directory / "ca.pem", require_client_cert=require_client_cert
    )


def operator(directory: Path, ca_from: Path | None = None) -> tls.ClientTLS:
    """The operator's client certificate of `directory`, trusting the CA of `ca_from` (default: the same)."""
    own = certs.files(directory, certs.OPERATOR)
    return tls.client_from_files((ca_from or directory) / "ca.pem", own.cert, own.key)


Serve = Callable[[tls.TLSConfig | None], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """serve(tls_config) -> the address of a started server with health and reflection (stopped after the test)."""
    apps: list[GrpcApp] = []

    async def start(config: tls.TLSConfig | None) -> str:
        async def healthy() -> bool:
            return True

        app = await create_server(
            bindings=[], address="127.0.0.1:0", domain="test.eventflow", health_check=healthy, auth=AUTH,
            credentials=tls.server_credentials(config),
        )  # fmt: skip
        await app.start()
        apps.append(app)
        return f"localhost:{app.port}"

    yield start
    for app in apps:
        await app.stop(grace=0)


async def check(address: str, client: tls.ClientTLS | None) -> health_pb2.HealthCheckResponse:
    async with tls.aio_channel(address, client) as channel:
        return await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)


async def refused(address: str, client: tls.ClientTLS | None) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await check(address, client)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
    return caught.value


# -- who gets through -------------------------------------------------------------------------------------


async def test_a_call_with_the_deployments_client_certificate_succeeds(serve: Serve, tls_certs: Path) -> None:
    address = await serve(server_tls(tls_certs))
    assert (await check(address, operator(tls_certs))).status in (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )


async def test_every_name_of_the_certificate_is_verified(serve: Serve, tls_certs: Path) -> None:
    address = await serve(server_tls(tls_certs))
    port = address.rsplit(":", 1)[1]
    for host in ("127.0.0.1", "[::1]", "localhost"):
        try:
            await check(f"{host}:{port}", operator(tls_certs))
        except grpc.aio.AioRpcError as error:
            if host == "[::1]" and "ddress" in (error.details() or ""):
                continue  # no IPv6 loopback on this machine
            raise


async def test_a_plaintext_call_is_refused(serve: Serve, tls_certs: Path) -> None:
    address = await serve(server_tls(tls_certs))
    await refused(address, None)


async def test_a_client_certificate_from_another_ca_is_refused(
    serve: Serve, tls_certs: Path, stranger_certs: Path
) -> None:
    address = await serve(server_tls(tls_certs))
    # It trusts our CA (so the server's certificate is fine), but presents a certificate our CA never signed.
    await refused(address, operator(stranger_certs, ca_from=tls_certs))


async def test_no_client_certificate_is_refused_where_one_is_required(serve: Serve, tls_certs: Path) -> None:
    address = await serve(server_tls(tls_certs))
    await refused(address, tls.client_from_files(tls_certs / "ca.pem"))


async def test_a_server_that_requires_none_lets_callers_without_one_in(serve: Serve, tls_certs: Path) -> None:
    """reservas: buyers reach it over TLS with only the CA."""
    address = await serve(server_tls(tls_certs, "reservas", require_client_cert=False))
    await check(address, tls.client_from_files(tls_certs / "ca.pem"))
    await refused(address, None)


async def test_a_caller_refuses_a_server_of_another_ca(serve: Serve, tls_certs: Path, stranger_certs: Path) -> None:
    address = await serve(server_tls(stranger_certs, require_client_cert=False))
    await refused(address, tls.client_from_files(tls_certs / "ca.pem"))


async def test_reservas_and_the_services_own_certificates_are_client_certificates(
    serve: Serve, tls_certs: Path
) -> None:
    """reservas presents reservas-client.pem; a container's health check presents its service's certificate."""
    address = await serve(server_tls(tls_certs, "eventos"))
    for name in (certs.RESERVAS_CLIENT, "eventos", "usuarios"):
        own = certs.files(tls_certs, name)
        await check(address, tls.client_from_files(tls_certs / "ca.pem", own.cert, own.key))


async def test_no_tls_configuration_serves_plaintext(serve: Serve) -> None:
    address = await serve(None)
    await check(address, None)


# -- configuration ----------------------------------------------------------------------------------------


def service_env(directory: Path, service: str = "usuarios", **extra: str) -> dict[str, str]:
    own = certs.files(directory, service)
    env = {**KEY_ENV, tls.CERT_VAR: str(own.cert), tls.KEY_VAR: str(own.key), tls.CA_VAR: str(directory / "ca.pem")}
    if service == "reservas":
        client = certs.files(directory, certs.RESERVAS_CLIENT)
        env |= {tls.CLIENT_CERT_VAR: str(client.cert), tls.CLIENT_KEY_VAR: str(client.key)}
    return env | extra


def test_no_variable_means_plaintext() -> None:
    assert tls.from_env({}, require_client_cert=True) is None
    assert UsuariosConfig.from_env(KEY_ENV).tls is None
    assert ReservasConfig.from_env(KEY_ENV).tls is None


def test_each_service_reads_its_tls(tls_certs: Path) -> None:
    usuarios = UsuariosConfig.from_env(service_env(tls_certs)).tls
    eventos = EventosConfig.from_env(service_env(tls_certs, "eventos")).tls
    reservas = ReservasConfig.from_env(service_env(tls_certs, "reservas")).tls
    assert usuarios is not None and usuarios.require_client_cert and usuarios.client is None
    assert eventos is not None and eventos.require_client_cert
    assert reservas is not None and not reservas.require_client_cert
    assert reservas.client is not None
    assert reservas.client.cert == certs.files(tls_certs, certs.RESERVAS_CLIENT).cert.read_bytes()
    relaxed = UsuariosConfig.from_env(service_env(tls_certs, **{tls.REQUIRE_CLIENT_CERT_VAR: "false"})).tls
    assert relaxed is not None and not relaxed.require_client_cert
    assert "PRIVATE KEY" not in repr(UsuariosConfig.from_env(service_env(tls_certs)))  # nor in a log or traceback


def _refused(env: dict[str, str], *fragments: str, config: type = UsuariosConfig) -> None:
    with pytest.raises(tls.TLSConfigError) as caught:
        config.from_env(env)
    for fragment in fragments:
        assert fragment in str(caught.value), str(caught.value)


def test_a_certificate_without_its_key_is_refused(tls_certs: Path) -> None:
    env = service_env(tls_certs)
    del env[tls.KEY_VAR]
    _refused(env, tls.KEY_VAR, "half configured", tls.CERT_VAR)


def test_a_ca_alone_is_refused(tls_certs: Path) -> None:
    _refused({**KEY_ENV, tls.CA_VAR: str(tls_certs / "ca.pem")}, tls.CA_VAR, tls.CERT_VAR, tls.KEY_VAR)


def test_a_file_that_cannot_be_read_is_named(tls_certs: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "usuarios.pem"
    _refused(service_env(tls_certs, **{tls.CERT_VAR: str(missing)}), tls.CERT_VAR, str(missing), "cannot be read")
    _refused(service_env(tls_certs, **{tls.CA_VAR: str(tmp_path)}), tls.CA_VAR, str(tmp_path), "directory")


def test_a_file_that_is_not_what_it_should_be_is_named(tls_certs: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    _refused(service_env(tls_certs, **{tls.CERT_VAR: str(junk)}), tls.CERT_VAR, str(junk), "no PEM certificate")
    _refused(service_env(tls_certs, **{tls.KEY_VAR: str(junk)}), tls.KEY_VAR, str(junk), "no PEM private key")
    _refused(service_env(tls_certs, **{tls.CA_VAR: str(junk)}), tls.CA_VAR, str(junk))
    other_key = str(certs.files(tls_certs, "eventos").key)
    _refused(
        service_env(tls_certs, **{tls.KEY_VAR: other_key}), tls.KEY_VAR, other_key, "not the private key", tls.CERT_VAR
    )


def test_an_expired_certificate_is_refused(tmp_path: Path) -> None:
    old = tmp_path / "old"
    certs.ensure(old, now=datetime.now(UTC) - timedelta(days=certs.LEAF_DAYS + 1))
    _refused(service_env(old), tls.CERT_VAR, str(certs.files(old, "usuarios").cert), "expired", "eventflow certs")


def test_required_client_certificates_need_the_ca(tls_certs: Path) -> None:
    env = service_env(tls_certs)
    del env[tls.CA_VAR]
    _refused(env, tls.REQUIRE_CLIENT_CERT_VAR, tls.CA_VAR)
    _refused(service_env(tls_certs, **{tls.REQUIRE_CLIENT_CERT_VAR: "maybe"}), tls.REQUIRE_CLIENT_CERT_VAR, "maybe")


def test_reservas_needs_the_ca_and_its_client_certificate(tls_certs: Path) -> None:
    env = service_env(tls_certs, "reservas")
    del env[tls.CLIENT_KEY_VAR]
    _refused(env, tls.CLIENT_KEY_VAR, "client certificate", config=ReservasConfig)
    env = service_env(tls_certs, "reservas")
    del env[tls.CA_VAR]
    _refused(env, tls.CA_VAR, "usuarios", config=ReservasConfig)
