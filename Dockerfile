# syntax=docker/dockerfile:1
# One image for the three EventFlow services; docker-compose.yml picks the service with its command:
#   python -m usuarios | python -m eventos | python -m reservas
# configured by environment variables (see each service's config.py).

ARG PYTHON_VERSION=3.11

# --- build: the project's wheel and the wheels of its runtime dependencies -------------------------------
FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY generated/ generated/
# eventflow-client: the stubs' distribution (clients/python/generated links to generated/), which the
# servers' depends on; both wheels are built here, from this context, never fetched from an index.
COPY clients/python/ clients/python/
COPY infra/ infra/
COPY usuarios/ usuarios/
COPY eventos/ eventos/
COPY reservas/ reservas/
# The stubs in generated/ are committed (and checked against protos/ by the test suite), so no protoc here.
RUN pip wheel --wheel-dir /wheels ./clients/python .

# --- runtime: a slim image with only the installed wheels, run as a non-root user ------------------------
FROM python:${PYTHON_VERSION}-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels eventflow \
 && groupadd --system --gid 10001 eventflow \
 && useradd --system --uid 10001 --gid eventflow --no-create-home --shell /usr/sbin/nologin eventflow
USER eventflow:eventflow

EXPOSE 50051 50052 50053

# Healthy when the service reports SERVING through the standard gRPC health service (grpc.health.v1),
# which it does once its MongoDB answers. EVENTFLOW_HEALTH_PORT names the port of the service this
# container runs (docker-compose.yml sets it for each one). Under TLS (docker-compose.tls.yml) the check
# speaks TLS with the service's own certificate (infra/healthcheck.py).
ENV EVENTFLOW_HEALTH_PORT=50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "infra.healthcheck"]

# Services stop gracefully on SIGTERM (in-flight calls finish); compose's stop_grace_period covers it.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "usuarios"]
