"""`eventflow certs`: a local certificate authority and the certificates of one EventFlow deployment.

`ensure(directory)` makes, or keeps when they are still good:

  ca.pem, ca-key.pem                  the deployment's CA (ECDSA P-256, 10 years)
  usuarios.pem, usuarios-key.pem      each service's certificate (1 year), for the names it is reached by:
  eventos.pem, eventos-key.pem          localhost, 127.0.0.1, ::1, the service's name (compose and k8s DNS)
  reservas.pem, reservas-key.pem        and any extra `hosts`
  reservas-client.pem, -key.pem       reservas' identity when it calls usuarios and eventos (mutual TLS)
  operator.pem, operator-key.pem      for people and tools (grpcurl -cert/-key) calling usuarios or eventos

A service certificate is good for client authentication as well, so a container's health check can present
the certificate of the service it checks. Private keys are written owner-only (0600), the directory is 0700,
every file atomically (a write cut short leaves the previous file, or a mismatch the next run repairs).
Idempotent: a certificate is kept while it is signed by the CA, matches its key, names what it must and is
valid for more than RENEW_BEFORE; otherwise it is made again (every one of them when the CA is). ECDSA P-256
because every TLS stack speaks it (Ed25519 certificates are not accepted everywhere).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: The services that get a server certificate, by the name compose and Kubernetes resolve them by.
SERVICE_NAMES = ("usuarios", "eventos", "reservas")
#: Names every service certificate carries, besides the service's own.
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
#: The client certificate reservas presents to usuarios and eventos.
RESERVAS_CLIENT = "reservas-client"
#: The client certificate for people and tools.
OPERATOR = "operator"

CA_DAYS = 3650
LEAF_DAYS = 365
RENEW_BEFORE = timedelta(days=30)
#: Certificates start a little in the past, so a machine whose clock is slightly behind accepts them.
CLOCK_SKEW = timedelta(minutes=5)
ORGANIZATION = "EventFlow"


@dataclass(frozen=True)
class Files:
    """Where one certificate and its private key live."""

    cert: Path
    key: Path


def files(directory: Path, name: str) -> Files:
    """`name`.pem and `name`-key.pem in `directory` (name: ca, a service, reservas-client or operator)."""
    return Files(directory / f"{name}.pem", directory / f"{name}-key.pem")


@dataclass(frozen=True)
class _Leaf:
    name: str
    common_name: str
    server_names: tuple[str, ...]  # empty for a client-only certificate


def _leaves(hosts: Iterable[str]) -> list[_Leaf]:
    extra = tuple(dict.fromkeys(h for h in hosts if h not in LOCAL_NAMES))
    leaves = [_Leaf(s, s, (*LOCAL_NAMES, s, *extra)) for s in SERVICE_NAMES]
    leaves.append(_Leaf(RESERVAS_CLIENT, "reservas", ()))
    leaves.append(_Leaf(OPERATOR, OPERATOR, ()))
    return leaves


def ensure(directory: Path, hosts: Sequence[str] = (), now: datetime | None = None) -> dict[str, str]:
    """Make or keep every file of the deployment in `directory`; returns {name: "created" | "kept" | "renewed"}.

    `hosts`: more names or addresses for the service certificates (a certificate that lacks one is made again).
    `now` is for tests: expiry is judged against it.
    """
    now = now or datetime.now(UTC)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    outcome: dict[str, str] = {}

    ca_files = files(directory, "ca")
    ca = _load_pair(ca_files)
    if ca is not None and _good_ca(*ca, now):
        outcome["ca"] = "kept"
        ca_files.key.chmod(0o600)  # a key loosened by hand is owner-only again
    else:
        outcome["ca"] = "renewed" if ca_files.cert.exists() else "created"
        ca = _make_ca(now)
        _write(ca_files, *ca)
    ca_cert, ca_key = ca

    for leaf in _leaves(hosts):
        leaf_files = files(directory, leaf.name)
        pair = _load_pair(leaf_files)
        if outcome["ca"] == "kept" and pair is not None and _good_leaf(*pair, leaf, ca_cert, now):
            outcome[leaf.name] = "kept"
            leaf_files.key.chmod(0o600)
            continue
        outcome[leaf.name] = "renewed" if leaf_files.cert.exists() else "created"
        _write(leaf_files, *_make_leaf(leaf, ca_cert, ca_key, now))
    return outcome


# -- checking what is there -----------------------------------------------------------------------------------


def _load_pair(where: Files) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The certificate and its key, or None when either is missing, unreadable, not PEM, or they do not match."""
    try:
        cert = x509.load_pem_x509_certificate(where.cert.read_bytes())
        key = serialization.load_pem_private_key(where.key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        return None
    return cert, key


def _fresh(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now + CLOCK_SKEW and cert.not_valid_after_utc - now > RENEW_BEFORE


def _good_ca(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, now: datetime) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        cert.verify_directly_issued_by(cert)
    except (x509.ExtensionNotFound, InvalidSignature, ValueError, TypeError):
        return False
    return constraints.ca and _fresh(cert, now)


def _good_leaf(
    cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, leaf: _Leaf, ca: x509.Certificate, now: datetime
) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        names = _names(cert)
    except (InvalidSignature, x509.ExtensionNotFound, ValueError, TypeError):
        return False
    wanted = _usages(leaf)
    return _fresh(cert, now) and wanted <= usages and set(leaf.server_names) <= names


def _names(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {*san.get_values_for_type(x509.DNSName), *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))}


# -- making new ones ------------------------------------------------------------------------------------------


def _usages(leaf: _Leaf) -> set[x509.ObjectIdentifier]:
    if leaf.server_names:  # a service: serves, and its health check presents it as a client
        return {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    return {ExtendedKeyUsageOID.CLIENT_AUTH}


def _subject(common_name: str) -> x509.Name:
    organization = x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)
    return x509.Name([organization, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    now: datetime,
    not_after: datetime,
    *,
    ca: bool,
) -> x509.CertificateBuilder:
    """What the CA and every leaf have in common: names, dates, basic constraints, key usage, key identifier."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _make_ca(now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _subject(f"{ORGANIZATION} local CA")
    cert = _builder(name, name, key, now, now + timedelta(days=CA_DAYS), ca=True).sign(key, hashes.SHA256())
    return cert, key


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _make_leaf(
    leaf: _Leaf, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, now: datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    not_after = min(now + timedelta(days=LEAF_DAYS), ca.not_valid_after_utc)
    builder = (
        _builder(_subject(leaf.common_name), ca.subject, key, now, not_after, ca=False)
        .add_extension(x509.ExtendedKeyUsage(sorted(_usages(leaf), key=lambda oid: oid.dotted_string)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if leaf.server_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in leaf.server_names]), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def _write(where: Files, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    """The key first, owner-only; then the certificate. Each replaces the old file in one rename."""
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_file(where.key, key_pem, 0o600)
    _write_file(where.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # whatever the umask
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)
