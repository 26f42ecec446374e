"""Port numbers from the environment: the one parser of every `*_PORT` variable (the services' gRPC and metrics
ports, and the ports `eventflow up` gives its stores), so that a value means the same to each of them."""

from __future__ import annotations

from collections.abc import Mapping


def env_port(env: Mapping[str, str], var: str, default: int, *, lowest: int = 0, zero: str = "any free port") -> int:
    """A port number from `var`: `default` when unset or empty, else `lowest` to 65535 (ValueError naming `var`
    otherwise). `zero` says what 0 means where it is allowed."""
    raw = env.get(var, "")
    if raw == "":
        return default
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not lowest <= port <= 65535:
        meaning = f"; 0: {zero}" if lowest == 0 else ""
        raise ValueError(f"{var} must be a port number from {lowest} to 65535{meaning}, got {raw!r}")
    return port
