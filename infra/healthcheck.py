"""`python -m infra.healthcheck`: the container image's health check (Dockerfile HEALTHCHECK).

Exit 0 when the service on 127.0.0.1:$EVENTFLOW_HEALTH_PORT reports SERVING through the standard gRPC
health service, 1 otherwise. When the container's service serves TLS (EVENTFLOW_TLS_CERT_FILE is set) the
check speaks TLS too, verifying the service against EVENTFLOW_TLS_CA_FILE and presenting the service's own
certificate, which `eventflow certs` makes good for client authentication (usuarios and eventos require one).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from infra import tls

PORT_VAR = "EVENTFLOW_HEALTH_PORT"


def check(env: Mapping[str, str]) -> int:
    client_tls = None
    if env.get(tls.CERT_VAR):
        # Without a CA file, the chain the service serves must hold its own issuer.
        ca = env.get(tls.CA_VAR) or env[tls.CERT_VAR]
        try:
            client_tls = tls.client_from_files(
                ca, env[tls.CERT_VAR], env.get(tls.KEY_VAR, ""), cert_var=tls.CERT_VAR, key_var=tls.KEY_VAR
            )
        except tls.TLSConfigError as error:
            print(f"health check: {error}", file=sys.stderr)
            return 1
    with tls.channel(f"127.0.0.1:{env[PORT_VAR]}", client_tls) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
        except grpc.RpcError as error:
            code, details = error.code().name, error.details()  # type: ignore[attr-defined]
            print(f"health check: {code}: {details}", file=sys.stderr)
            return 1
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(check(os.environ))
