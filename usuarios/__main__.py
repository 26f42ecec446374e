"""`python -m usuarios`: serve UsuariosService, configured from the environment (see usuarios.config)."""

import asyncio
import logging
import sys

from infra import logs
from usuarios.config import Config
from usuarios.server import serve


def main() -> None:
    logs.configure("usuarios")
    try:
        config = Config.from_env()
    except ValueError as error:  # a missing key or a bad setting: the message names the variable
        logging.getLogger("usuarios").error("cannot start: %s", error)
        sys.exit(2)
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
