"""`python -m reservas`: serve ReservasService, configured from the environment (see reservas.config)."""

import asyncio
from functools import partial

from infra import logs, tracing
from infra.server import config_or_exit
from reservas.config import Config
from reservas.server import serve


def main() -> None:
    logs.configure("reservas")
    config_or_exit(partial(tracing.configure, "reservas"))  # off unless the OTEL_* variables ask (infra.tracing)
    asyncio.run(serve(config_or_exit(Config.from_env)))


if __name__ == "__main__":
    main()
