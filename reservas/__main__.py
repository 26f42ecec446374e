"""`python -m reservas`: serve ReservasService, configured from the environment (see reservas.config)."""

import asyncio
import logging
import sys

from infra import logs
from reservas.config import Config
from reservas.server import serve


def main() -> None:
    logs.configure("reservas")
    try:
        config = Config.from_env()
    except ValueError as error:  # a missing key or a bad setting: the message names the variable
        logging.getLogger("reservas").error("cannot start: %s", error)
        sys.exit(2)
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
