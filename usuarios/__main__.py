"""`python -m usuarios`: serve UsuariosService, configured from the environment (see usuarios.config)."""

import asyncio

from infra import logs
from usuarios.config import Config
from usuarios.server import serve


def main() -> None:
    logs.configure("usuarios")
    asyncio.run(serve(Config.from_env()))


if __name__ == "__main__":
    main()
