"""`python -m reservas`: serve ReservasService, configured from the environment (see reservas.config)."""

import asyncio

from infra import logs
from infra.server import config_or_exit
from reservas.config import Config
from reservas.server import serve


def main() -> None:
    logs.configure("reservas")
    asyncio.run(serve(config_or_exit(Config.from_env)))


if __name__ == "__main__":
    main()
