"""`python -m eventos`: serve EventosService, configured from the environment."""

import asyncio

from eventos.config import Config
from eventos.server import serve
from infra import logs

if __name__ == "__main__":
    logs.configure("eventos")
    asyncio.run(serve(Config.from_env()))
