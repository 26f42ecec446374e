"""`python -m eventos`: serve EventosService, configured from the environment."""

import asyncio

from eventos.config import Config
from eventos.server import serve
from infra import logs
from infra.server import config_or_exit

if __name__ == "__main__":
    logs.configure("eventos")
    asyncio.run(serve(config_or_exit(Config.from_env)))
