"""`python -m eventos`: serve EventosService, configured from the environment."""

import asyncio
import logging
import sys

from eventos.config import Config
from eventos.server import serve
from infra import logs

if __name__ == "__main__":
    logs.configure("eventos")
    try:
        config = Config.from_env()
    except ValueError as error:  # a missing key or a bad setting: the message names the variable
        logging.getLogger("eventos").error("cannot start: %s", error)
        sys.exit(2)
    asyncio.run(serve(config))
