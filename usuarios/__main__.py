"""`python -m usuarios`: serve UsuariosService, configured from the environment (see usuarios.config)."""

import asyncio
from functools import partial

from infra import logs, tracing
from infra.server import config_or_exit
from usuarios.config import Config
from usuarios.server import serve


def main() -> None:
    logs.configure("usuarios")
    config_or_exit(partial(tracing.configure, "usuarios"))  # off unless the OTEL_* variables ask (infra.tracing)
    asyncio.run(serve(config_or_exit(Config.from_env)))


if __name__ == "__main__":
    main()
