"""`eventflow certs`: what it makes, with which permissions, and that a second run keeps what is still good."""

from __future__ import annotations

import ipaddress
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from infra import certs
from infra.cli import main

ALL = ["ca", *certs.SERVICE_NAMES, certs.RESERVAS_CLIENT, certs.OPERATOR]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load(directory: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(certs.files(directory, name).cert.read_bytes())


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_the_command_makes_a_ca_and_every_certificate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "certs"
    assert main(["certs", "--dir", str(directory)]) == 0
    out = capsys.readouterr().out
    assert str(directory) in out and "grpcurl" in out and "-cert" in out
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        f"{name}{suffix}" for name in ALL for suffix in (".pem", "-key.pem")
    )

    ca = load(directory, "ca")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for name in ALL[1:]:
        cert = load(directory, name)
        cert.verify_directly_issued_by(ca)
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        assert ExtendedKeyUsageOID.CLIENT_AUTH in usages
        assert (ExtendedKeyUsageOID.SERVER_AUTH in usages) == (name in certs.SERVICE_NAMES)
    for service in certs.SERVICE_NAMES:
        san = load(directory, service).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", service}
        assert set(san.get_values_for_type(x509.IPAddress)) == {
            ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")
        }


def test_private_keys_are_owner_only_and_so_is_the_directory(tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    certs.ensure(directory)
    assert mode(directory) == 0o700
    for name in ALL:
        assert mode(certs.files(directory, name).key) == 0o600, name
        assert mode(certs.files(directory, name).cert) == 0o644, name

    # Loosened by hand: the next run makes them owner-only again.
    directory.chmod(0o755)
    certs.files(directory, "ca").key.chmod(0o644)
    certs.files(directory, "operator").key.chmod(0o640)
    certs.ensure(directory)
    assert mode(directory) == 0o700
    assert mode(certs.files(directory, "ca").key) == mode(certs.files(directory, "operator").key) == 0o600


def test_a_second_run_keeps_every_good_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "certs"
    certs.ensure(directory)
    before = snapshot(directory)
    assert set(certs.ensure(directory).values()) == {"kept"}
    assert snapshot(directory) == before
    assert main(["certs", "--dir", str(directory)]) == 0
    assert "kept" in capsys.readouterr().out
    assert snapshot(directory) == before


def test_a_missing_or_broken_file_is_made_again_alone(tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    certs.ensure(directory)
    before = snapshot(directory)
    certs.files(directory, "eventos").key.unlink()
    certs.files(directory, "operator").cert.write_text("garbage")
    outcome = certs.ensure(directory)
    assert outcome["eventos"] == "renewed" and outcome["operator"] == "renewed"
    assert {k for k, v in outcome.items() if v == "kept"} == set(ALL) - {"eventos", "operator"}
    after = snapshot(directory)
    assert after["usuarios.pem"] == before["usuarios.pem"] and after["ca-key.pem"] == before["ca-key.pem"]
    load(directory, "eventos").verify_directly_issued_by(load(directory, "ca"))


def test_certificates_that_expire_soon_are_renewed(tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    certs.ensure(directory)
    ca_before = certs.files(directory, "ca").cert.read_bytes()
    later = datetime.now(UTC) + timedelta(days=certs.LEAF_DAYS) - certs.RENEW_BEFORE + timedelta(days=1)
    outcome = certs.ensure(directory, now=later)
    assert outcome["ca"] == "kept" and all(outcome[n] == "renewed" for n in ALL[1:])
    assert certs.files(directory, "ca").cert.read_bytes() == ca_before
    assert load(directory, "usuarios").not_valid_after_utc > later + timedelta(days=300)


def test_a_new_ca_renews_every_certificate(tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    certs.ensure(directory)
    certs.files(directory, "ca").key.unlink()
    outcome = certs.ensure(directory)
    assert set(outcome.values()) == {"renewed"}
    ca = load(directory, "ca")
    for name in ALL[1:]:
        load(directory, name).verify_directly_issued_by(ca)


def test_more_names_make_the_service_certificates_again(tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    certs.ensure(directory)
    outcome = certs.ensure(directory, hosts=["api.example.com", "10.0.0.7"])
    assert all(outcome[s] == "renewed" for s in certs.SERVICE_NAMES) and outcome[certs.OPERATOR] == "kept"
    san = load(directory, "reservas").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "api.example.com" in san.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("10.0.0.7") in san.get_values_for_type(x509.IPAddress)
    assert set(certs.ensure(directory).values()) == {"kept"}  # a certificate with more names still serves


def test_a_directory_that_cannot_be_made_is_an_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["certs", "--dir", str(blocker / "certs")]) == 1
    assert str(blocker) in capsys.readouterr().err
