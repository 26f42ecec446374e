"""`python -m eventos`: serve EventosService, configured from the environment."""

import asyncio
from functools import partial

from eventos.config import Config
from eventos.server import serve
from infra import logs, tracing
from infra.server import config_or_exit

if __name__ == "__main__":
    logs.configure("eventos")
    config_or_exit(partial(tracing.configure, "eventos"))  # off unless the OTEL_* variables ask (infra.tracing)
    asyncio.run(serve(config_or_exit(Config.from_env)))
