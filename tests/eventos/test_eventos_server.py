"""The eventos server as a whole: configuration, health, reflection, `python -m eventos`, big listings."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import UTC, datetime, timedelta

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from eventflow.eventos.v1 import eventos_pb2, eventos_pb2_grpc
from eventos.config import Config
from eventos.domain import NewEvento
from infra import procs
from callers import KEY_ENV, PAGE_TOKEN_KEY, open_channel


def test_config_from_env() -> None:
    # /metrics: served on 9452 by a process configured from its environment, by none built in code.
    assert Config.from_env(KEY_ENV) == Config(page_token_key=PAGE_TOKEN_KEY, metrics_port=9452)
    assert Config().port == 50052 and Config().mongodb_database == "eventflow_eventos"
    config = Config.from_env(
        {
            **KEY_ENV,
            "EVENTOS_PORT": "6000",
            "GRPC_BIND_HOST": "127.0.0.1",
            "MONGODB_URI": "mongodb://db:27017",
            "EVENTOS_MONGODB_DATABASE": "x",
        }
    )
    assert config == Config(6000, "127.0.0.1", "mongodb://db:27017", "x", page_token_key=PAGE_TOKEN_KEY,
                            metrics_port=9452)  # fmt: skip
    assert config.address == "127.0.0.1:6000"


async def test_reflection_lists_the_service(eventos_address: str) -> None:
    async with open_channel(eventos_address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for reply in stub.ServerReflectionInfo(iter([request])):
            names = {s.name for s in reply.list_services_response.service}
            assert "eventflow.eventos.v1.EventosService" in names
            break


async def test_page_size_is_capped_at_500(eventos) -> None:
    fecha = datetime(2027, 1, 1, tzinfo=UTC)
    news = [NewEvento(f"e{i}", fecha + timedelta(minutes=i), "L", 1, 0, "UYU", ()) for i in range(501)]
    await asyncio.gather(*(eventos.repository.add(new) for new in news))
    page = await eventos.stub.ListEventos(eventos_pb2.ListEventosRequest(page_size=1000))
    assert len(page.eventos) == 500 and page.next_page_token
    rest = await eventos.stub.ListEventos(
        eventos_pb2.ListEventosRequest(page_size=1000, page_token=page.next_page_token)
    )
    assert [e.nombre for e in rest.eventos] == ["e500"] and rest.next_page_token == ""


async def test_runs_as_a_process_and_stops_on_sigterm(mongo_uri: str, db_name, logs_dir) -> None:
    port = procs.free_port()
    env = dict(
        os.environ,
        **KEY_ENV,
        EVENTOS_PORT=str(port),
        GRPC_BIND_HOST="127.0.0.1",
        MONGODB_URI=mongo_uri,
        EVENTOS_MONGODB_DATABASE=db_name("eventos"),
    )
    process = procs.service_process("eventos", port, env, logs_dir / "eventos-process.log").start()
    try:
        await asyncio.to_thread(process.wait_listening)
        async with open_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            check = health_pb2.HealthCheckRequest(service="eventflow.eventos.v1.EventosService")
            while (await health.Check(check, timeout=5)).status != health_pb2.HealthCheckResponse.SERVING:
                await asyncio.sleep(0.05)
            stub = eventos_pb2_grpc.EventosServiceStub(channel)
            request = eventos_pb2.CreateEventoRequest(evento=eventos_pb2.Evento(nombre="n", lugar="l", aforo_total=1))
            request.evento.fecha.FromDatetime(datetime(2027, 1, 1, tzinfo=UTC))
            created = await stub.CreateEvento(request)
            assert (await stub.GetEvento(eventos_pb2.GetEventoRequest(id=created.id))) == created
        process.signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.stop) == 0
    finally:
        process.stop()
