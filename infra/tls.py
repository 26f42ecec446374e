"""TLS for the services and their callers: configuration from the environment, and gRPC credentials.

A service serves TLS when it is given a certificate and its key; with none of the variables below it serves
plaintext, as before. Anything in between (a certificate without its key, a CA without a certificate, a file
that cannot be read or is not what it should be) is an error that names the variable and the file, and the
service does not start.

  EVENTFLOW_TLS_CERT_FILE            the service's certificate chain (PEM)
  EVENTFLOW_TLS_KEY_FILE             its private key (PEM, unencrypted; owner-only)
  EVENTFLOW_TLS_CA_FILE              the deployment's CA (PEM): the issuer callers' certificates must have,
                                     and, for reservas, the issuer of usuarios' and eventos' certificates
  EVENTFLOW_TLS_REQUIRE_CLIENT_CERT  true: callers must present a certificate signed by that CA (mutual TLS).
                                     Default true for usuarios and eventos (only reservas and operators call
                                     them), false for reservas (buyers reach it)
  EVENTFLOW_TLS_CLIENT_CERT_FILE     reservas only: the certificate it presents to usuarios and eventos,
  EVENTFLOW_TLS_CLIENT_KEY_FILE        and its key

Under TLS reservas calls usuarios and eventos over TLS as well, verifying them against the CA file.
`eventflow certs` makes every one of these files. Certificates are read when the service starts: a renewed
certificate takes effect at the next start.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = logging.getLogger(__name__)

CERT_VAR = "EVENTFLOW_TLS_CERT_FILE"
KEY_VAR = "EVENTFLOW_TLS_KEY_FILE"
CA_VAR = "EVENTFLOW_TLS_CA_FILE"
REQUIRE_CLIENT_CERT_VAR = "EVENTFLOW_TLS_REQUIRE_CLIENT_CERT"
CLIENT_CERT_VAR = "EVENTFLOW_TLS_CLIENT_CERT_FILE"
CLIENT_KEY_VAR = "EVENTFLOW_TLS_CLIENT_KEY_FILE"

#: A certificate this close to its end is still used, with a warning in the log.
WARN_BEFORE = timedelta(days=14)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class TLSConfigError(ValueError):
    """The TLS configuration is incomplete or a file is unusable; the message names the variable and the file."""


@dataclass(frozen=True)
class ClientTLS:
    """What a caller needs: the CA its servers' certificates come from, and the certificate it presents (if any)."""

    ca: bytes
    cert: bytes | None = None
    key: bytes | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


@dataclass(frozen=True)
class TLSConfig:
    """A service's TLS: its certificate and key, the CA of its callers, and (reservas) how it calls the others."""

    cert: bytes
    key: bytes
    ca: bytes | None = None
    require_client_cert: bool = False
    client: ClientTLS | None = None

    def server_credentials(self) -> grpc.ServerCredentials:
        # Without required client certificates none is asked for: reservas' buyers have none.
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.ca if self.require_client_cert else None,
            require_client_auth=self.require_client_cert,
        )

    def __repr__(self) -> str:  # never the key's bytes in a log or a traceback
        return f"TLSConfig(require_client_cert={self.require_client_cert}, client={self.client is not None})"


# -- from the environment -------------------------------------------------------------------------------------


def from_env(env: Mapping[str, str], *, require_client_cert: bool, calls_out: bool = False) -> TLSConfig | None:
    """The service's TLS from `env`, or None for plaintext (none of the variables set).

    `require_client_cert`: the default of EVENTFLOW_TLS_REQUIRE_CLIENT_CERT for this service.
    `calls_out`: the service calls others (reservas): reads EVENTFLOW_TLS_CLIENT_CERT_FILE / _KEY_FILE.
    """
    names = [CERT_VAR, KEY_VAR, CA_VAR, REQUIRE_CLIENT_CERT_VAR]
    if calls_out:
        names += [CLIENT_CERT_VAR, CLIENT_KEY_VAR]
    given = {name: env.get(name, "") for name in names}
    if not any(given.values()):
        return None
    if not given[CERT_VAR] or not given[KEY_VAR]:
        present = ", ".join(v for v in names if given[v])
        missing = " and ".join(v for v in (CERT_VAR, KEY_VAR) if not given[v])
        raise TLSConfigError(
            f"TLS is half configured ({present} set, {missing} not): to serve TLS set {CERT_VAR} and {KEY_VAR} "
            "(`eventflow certs` makes them); to serve plaintext unset every EVENTFLOW_TLS_ variable"
        )
    if given[REQUIRE_CLIENT_CERT_VAR]:
        require_client_cert = _flag(REQUIRE_CLIENT_CERT_VAR, given[REQUIRE_CLIENT_CERT_VAR])
    return load(
        cert_file=given[CERT_VAR],
        key_file=given[KEY_VAR],
        ca_file=given[CA_VAR] or None,
        require_client_cert=require_client_cert,
        client_cert_file=given.get(CLIENT_CERT_VAR) or None,
        client_key_file=given.get(CLIENT_KEY_VAR) or None,
        calls_out=calls_out,
    )


def _flag(var: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise TLSConfigError(f"{var} must be true or false, got {raw[:20]!r}")


def load(
    *,
    cert_file: str | Path,
    key_file: str | Path,
    ca_file: str | Path | None = None,
    require_client_cert: bool = False,
    client_cert_file: str | Path | None = None,
    client_key_file: str | Path | None = None,
    calls_out: bool = False,
) -> TLSConfig:
    """A service's TLS from files, each read and checked now (the variable names say which setting is wrong)."""
    cert, key = _pair(CERT_VAR, cert_file, KEY_VAR, key_file)
    if ca_file is None and require_client_cert:
        raise TLSConfigError(
            f"{REQUIRE_CLIENT_CERT_VAR} is on but {CA_VAR} is not set: name the CA that signs the callers' "
            f"certificates (`eventflow certs` makes ca.pem), or set {REQUIRE_CLIENT_CERT_VAR}=false"
        )
    ca = _ca(CA_VAR, ca_file) if ca_file is not None else None
    client = None
    if calls_out:
        if ca is None:
            raise TLSConfigError(
                f"{CA_VAR} is not set: reservas needs the CA that signs usuarios' and eventos' certificates "
                "to call them over TLS"
            )
        if client_cert_file is None or client_key_file is None:
            missing = " and ".join(
                v for v, f in ((CLIENT_CERT_VAR, client_cert_file), (CLIENT_KEY_VAR, client_key_file)) if f is None
            )
            raise TLSConfigError(
                f"{missing} not set: under TLS reservas presents a client certificate to usuarios and eventos, which "
                "require one under TLS (`eventflow certs` makes reservas-client.pem and reservas-client-key.pem)"
            )
        client_cert, client_key = _pair(CLIENT_CERT_VAR, client_cert_file, CLIENT_KEY_VAR, client_key_file)
        client = ClientTLS(ca, client_cert, client_key)
    return TLSConfig(cert, key, ca, require_client_cert, client)


def client_from_files(
    ca_file: str | Path,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
    *,
    cert_var: str = CLIENT_CERT_VAR,
    key_var: str = CLIENT_KEY_VAR,
) -> ClientTLS:
    """A caller's TLS from files: the CA, and the certificate it presents (errors name `cert_var`/`key_var`)."""
    ca = _ca(CA_VAR, ca_file)
    if cert_file is None or key_file is None:
        return ClientTLS(ca)
    cert, key = _pair(cert_var, cert_file, key_var, key_file)
    return ClientTLS(ca, cert, key)


# -- reading and checking the files ---------------------------------------------------------------------------


def _read(var: str, path: str | Path) -> bytes:
    path = Path(path)
    try:
        if path.is_dir():
            raise TLSConfigError(f"{var} ({path}) is a directory, not a PEM file")
        return path.read_bytes()
    except OSError as error:
        raise TLSConfigError(f"{var} ({path}) cannot be read: {error.strerror or error}") from None


def _certificates(var: str, path: str | Path, data: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TLSConfigError(f"{var} ({path}) holds no PEM certificate") from None


def _ca(var: str, path: str | Path) -> bytes:
    data = _read(var, path)
    _certificates(var, path, data)
    return data


def _pair(cert_var: str, cert_file: str | Path, key_var: str, key_file: str | Path) -> tuple[bytes, bytes]:
    """The certificate chain and its private key, checked to belong together and to be in date."""
    cert_data, key_data = _read(cert_var, cert_file), _read(key_var, key_file)
    leaf = _certificates(cert_var, cert_file, cert_data)[0]
    try:
        key: Any = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        raise TLSConfigError(f"{key_var} ({key_file}) is encrypted: give the key unencrypted (owner-only)") from None
    except ValueError:
        raise TLSConfigError(f"{key_var} ({key_file}) holds no PEM private key") from None
    if key.public_key() != leaf.public_key():
        raise TLSConfigError(
            f"{key_var} ({key_file}) is not the private key of the certificate in {cert_var} ({cert_file})"
        )
    now = datetime.now(UTC)
    if leaf.not_valid_after_utc <= now:
        raise TLSConfigError(
            f"{cert_var} ({cert_file}) expired on {leaf.not_valid_after_utc:%Y-%m-%d}: "
            "`eventflow certs` makes a new one"
        )
    if leaf.not_valid_after_utc - now < WARN_BEFORE:
        log.warning(
            "certificate expires soon",
            extra={"variable": cert_var, "file": str(cert_file), "not_after": leaf.not_valid_after_utc.isoformat()},
        )
    return cert_data, key_data


# -- credentials and channels ---------------------------------------------------------------------------------


def server_credentials(tls: TLSConfig | None) -> grpc.ServerCredentials | None:
    """The server's credentials, or None to serve plaintext."""
    return tls.server_credentials() if tls is not None else None


def aio_channel(
    address: str,
    tls: ClientTLS | None,
    options: Sequence[tuple[str, Any]] = (),
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    """A grpc.aio channel: TLS with `tls`, plaintext without (`interceptors`: for example a bearer token's)."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=list(options), interceptors=list(interceptors))
    return grpc.aio.secure_channel(address, tls.credentials(), options=list(options), interceptors=list(interceptors))


def channel(address: str, tls: ClientTLS | None, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    """A blocking channel: TLS with `tls`, plaintext without."""
    if tls is None:
        return grpc.insecure_channel(address, options=list(options))
    return grpc.secure_channel(address, tls.credentials(), options=list(options))

