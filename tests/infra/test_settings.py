"""The three services read the settings they share the same way, through one parser each (infra.settings)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from callers import KEY_ENV

from eventos.config import Config as EventosConfig
from infra.auth import Role
from infra.ratelimit import Limit
from infra.settings import Common
from reservas.config import Config as ReservasConfig
from usuarios.config import Config as UsuariosConfig

CONFIGS = [UsuariosConfig, EventosConfig, ReservasConfig]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.SERVICE)
def test_every_service_reads_the_shared_variables_alike(config: type[Common]) -> None:
    name = config.SERVICE.upper()
    env = {
        **KEY_ENV,
        f"{name}_PORT": "6100",
        f"{name}_MONGODB_DATABASE": "db",
        f"{name}_METRICS_PORT": "0",
        "GRPC_BIND_HOST": "0.0.0.0",
        "MONGODB_URI": "mongodb://db:27017",
        "MONGODB_MAX_POOL_SIZE": "7",
        "GRPC_MAX_MESSAGE_BYTES": "65536",
        "REDIS_URL": "redis://cache:6379/2",
        "EVENTFLOW_RATE_LIMIT_CLIENTE": "5/10",
    }
    got = config.from_env(env)
    assert (got.address, got.mongodb_uri, got.mongodb_database, got.metrics_port) == (
        "0.0.0.0:6100", "mongodb://db:27017", "db", 0,
    )  # fmt: skip
    assert (got.mongodb_max_pool_size, got.max_message_bytes, got.redis_url) == (7, 65536, "redis://cache:6379/2")
    assert got.rate_limits[Role.CLIENTE] == Limit(5, 10)
    assert got.auth is not None and got.page_token_key


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.SERVICE)
def test_a_bad_port_is_refused_naming_its_variable(config: type[Common]) -> None:
    var = f"{config.SERVICE.upper()}_PORT"
    with pytest.raises(ValueError, match=f"{var} must be a port number"):
        config.from_env({**KEY_ENV, var: "fifty"})


def test_a_port_variable_means_the_same_to_the_service_its_metrics_and_eventflow_up(tmp_path: Path) -> None:
    """One parser (infra.ports): empty is the default everywhere; a bad value names its variable everywhere; 0 is
    any free port for a service, no /metrics for its metrics, and refused by `eventflow up`, which prints its
    ports."""
    from infra.metrics import metrics_port  # noqa: PLC0415
    from infra.stack import Options, Stack, StackError  # noqa: PLC0415

    def up(env: dict[str, str]) -> Stack:
        return Stack(Options(data_dir=tmp_path), env=env)

    empty = {**KEY_ENV, "RESERVAS_PORT": "", "RESERVAS_METRICS_PORT": ""}
    assert ReservasConfig.from_env(empty).port == up(empty).ports["reservas"] == 50053
    assert metrics_port(empty, "reservas") == 9453
    zero = {**KEY_ENV, "RESERVAS_PORT": "0", "RESERVAS_METRICS_PORT": "0"}
    assert ReservasConfig.from_env(zero).port == 0 and metrics_port(zero, "reservas") == 0
    with pytest.raises(StackError, match="RESERVAS_PORT must be a port number from 1 to 65535"):
        up(zero)
    for bad in ("fifty", "70000", "-1"):
        for read in (lambda env: ReservasConfig.from_env(env), up):
            with pytest.raises((ValueError, StackError), match="RESERVAS_PORT must be a port number"):
                read({**KEY_ENV, "RESERVAS_PORT": bad})
        with pytest.raises(ValueError, match="RESERVAS_METRICS_PORT must be a port number"):
            metrics_port({"RESERVAS_METRICS_PORT": bad}, "reservas")


def test_no_service_redefines_a_shared_setting_beyond_its_own_defaults() -> None:
    """A shared field has one home: a service only gives port, database (and reservas its Redis) its default."""
    shared = {f.name for f in dataclasses.fields(Common)}
    own_defaults = {"port", "mongodb_database", "redis_url"}
    for config in CONFIGS:
        redefined = shared & set(config.__dict__.get("__annotations__", {}))
        assert redefined <= own_defaults, (config.SERVICE, redefined - own_defaults)


def test_reservas_wait_has_one_default() -> None:
    from reservas.config import DEFAULT_RESERVAR_WAIT_SECONDS  # noqa: PLC0415

    assert ReservasConfig().reservar_wait_seconds == DEFAULT_RESERVAR_WAIT_SECONDS == 120.0
    env = {**KEY_ENV, "EVENTFLOW_RESERVAR_WAIT_SECONDS": "0"}
    with pytest.raises(ValueError, match="EVENTFLOW_RESERVAR_WAIT_SECONDS must be more than 0"):
        ReservasConfig.from_env(env)
