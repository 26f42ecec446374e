"""Crash tests: reservas dies abruptly at every step boundary, restarts, and settles every reservation.

reservas runs as a subprocess (`python -m reservas`) wired to the in-process usuarios and
eventos and the session's MongoDB and Redis. Each faulty process gets EVENTFLOW_FAULT for one
point of the saga and one purchase, and exits with 137 there (like kill -9); one more holds its
purchase before the payment (EVENTFLOW_FAULT=hold-before:ProcesadorPago) and is killed with
SIGKILL once its log says the purchase is there. Then a single clean reservas process
(short lease TTL and recovery interval) must settle all of them from their logs, and the
invariants must hold. The faulty processes run side by side, which also exercises several
reservas processes sharing one database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conftest import CONFIRMADA, FALLIDA, World
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eventflow.reservas.v1 import reservas_pb2
from infra import procs
from reservas.domain import Estado
from callers import open_channel

# fault -> how the reservation must end after recovery
FAULTS = {
    "crash-after:ValidadorDatos": None,  # nothing done or logged yet: the reservation never existed
    "crash-after:ValidadorInventario": FALLIDA,  # tickets taken, not charged: released
    "crash-before:ProcesadorPago": FALLIDA,  # payment announced, never made: the ledger says so
    "crash-after:ProcesadorPago": CONFIRMADA,  # charged and tickets still taken: completed forward
    "crash-before:ConfirmadorReserva": CONFIRMADA,
    "crash-after:ConfirmadorReserva": CONFIRMADA,  # already confirmed: only the holds to release
}


async def wait_serving(address: str, timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with open_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if loop.time() > deadline:
                raise TimeoutError(f"{address} did not become SERVING")
            await asyncio.sleep(0.1)


@pytest.fixture
def processes() -> Iterator[list[procs.ManagedProcess]]:
    started: list[procs.ManagedProcess] = []
    yield started
    for process in started:
        process.kill()
        process.stop()


async def start_reservas(
    world: World, processes: list[procs.ManagedProcess], logs: Path, name: str, **env: str
) -> tuple[procs.ManagedProcess, str]:
    port = procs.free_port()
    process = procs.service_process("reservas", port, world.reservas_env(port, **env), logs / f"{name}.log")
    processes.append(process.start())
    await asyncio.to_thread(process.wait_listening, 60)
    address = f"127.0.0.1:{port}"
    await wait_serving(address)
    return process, address


async def held(log: Path, point: str, timeout: float = 30) -> None:
    """Until the process's log says a purchase is held at `point` (EVENTFLOW_FAULT=hold-...)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while f"holding {point}" not in log.read_text(errors="replace"):
        if loop.time() > deadline:
            raise TimeoutError(f"no purchase was held {point} (see {log})")
        await asyncio.sleep(0.05)


async def reserva_id_of(world: World, key: str, timeout: float = 30) -> str:
    """The reservation a request started, from reservas' log (the crashed call never answered)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        doc = await world.db("reservas")["reserva_eventos"].find_one({"version": 1, "datos.idempotency_key": key})
        if doc is not None:
            return doc["reserva_id"]
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no reservation was started for key {key}")


async def test_every_reservation_settles_after_crashes_at_every_step(
    world: World, processes: list[procs.ManagedProcess], tmp_path: Path
) -> None:
    evento = await world.evento(aforo=20)
    usuarios = await world.usuarios_n(len(FAULTS) + 1)

    async def crash_at(fault: str, usuario: str) -> tuple[str, str]:
        name = fault.replace(":", "-")
        process, address = await start_reservas(world, processes, tmp_path, name, EVENTFLOW_FAULT=fault)
        stub = world.connect(address)
        key = f"crash-{name}"
        failure = await world.fails(stub.Reservar(world.request(usuario, evento.id, cantidad=2, key=key), timeout=30))
        assert failure.code == grpc.StatusCode.UNAVAILABLE, (fault, failure)
        assert await asyncio.to_thread(process.proc.wait, 30) == 137  # type: ignore[union-attr]
        return fault, key

    async def killed_mid_payment(usuario: str) -> tuple[str, str]:
        process, address = await start_reservas(
            world, processes, tmp_path, "kill-mid-payment", EVENTFLOW_FAULT="hold-before:ProcesadorPago"
        )
        stub = world.connect(address)
        key = "crash-kill-mid-payment"
        call = asyncio.ensure_future(stub.Reservar(world.request(usuario, evento.id, cantidad=2, key=key), timeout=30))
        await held(tmp_path / "kill-mid-payment.log", "before ProcesadorPago")  # tickets taken, nothing charged
        process.kill()  # SIGKILL of a live process (leases renewed, calls in flight), not an exit at a checkpoint
        failure = await world.fails(call)
        assert failure.code == grpc.StatusCode.UNAVAILABLE
        return "kill -9 before the charge", key

    crashed = await asyncio.gather(
        *(crash_at(fault, usuario) for fault, usuario in zip(FAULTS, usuarios, strict=False)),
        killed_mid_payment(usuarios[-1]),
    )
    never_logged = {fault for fault, expected in FAULTS.items() if expected is None}
    ids = {fault: await reserva_id_of(world, key) for fault, key in crashed if fault not in never_logged}
    mid = await world.check(allow_pending=True)  # nothing is broken even before recovery
    assert any(r.estado.name == "PENDIENTE" for r in mid.reservas.values())

    _, address = await start_reservas(world, processes, tmp_path, "recovery")
    world.reservas = world.connect(address)
    settled = {fault: await world.wait_settled(reserva_id, timeout=60) for fault, reserva_id in ids.items()}
    for fault, expected in FAULTS.items():
        if expected is not None:
            assert settled[fault].estado == expected, (fault, settled[fault])
    assert settled["kill -9 before the charge"].estado == FALLIDA  # the charge never happened

    interrupted = ids["crash-after:ValidadorInventario"]
    # The client's retry of an interrupted purchase (same key) buys: the interrupted attempt was fully
    # undone and stays FALLIDA with SAGA_INTERRUPTED; the key now points at the new, confirmed one.
    failed_key = dict(crashed)["crash-after:ValidadorInventario"]
    retried = await world.stub.Reservar(world.request(usuarios[1], evento.id, cantidad=2, key=failed_key), timeout=30)
    assert retried.estado == CONFIRMADA and retried.id != interrupted
    again = await world.stub.Reservar(world.request(usuarios[1], evento.id, cantidad=2, key=failed_key), timeout=30)
    assert again.id == retried.id  # and a repeat of the retry answers it, buying nothing more
    old = await world.stub.GetReserva(reservas_pb2.GetReservaRequest(id=interrupted))
    assert (old.estado, old.motivo != "") == (FALLIDA, True)

    # Killed before anything reached the log: the reservation never existed (nothing was done), and the
    # client's retry with the same key buys once the dead process's claim has expired.
    unlogged_key = dict(crashed)["crash-after:ValidadorDatos"]
    bought = await world.stub.Reservar(world.request(usuarios[0], evento.id, cantidad=2, key=unlogged_key), timeout=30)
    assert bought.estado == CONFIRMADA

    report = await world.check()
    assert report.count(Estado.CONFIRMADA) == 5
    assert (await world.get_evento(evento.id)).entradas_disponibles == 20 - 2 * 5


async def test_a_charge_already_refunded_when_recovery_comes_is_recorded_with_its_refund(
    world: World, processes: list[procs.ManagedProcess], tmp_path: Path
) -> None:
    """Killed after the payment, before the log heard of it; an earlier recovery attempt refunded the charge
    and died before recording anything. Recovery must put the charge in the log before the refund, so the
    stream nets to zero like the ledger (the soak found a stream that said -3000)."""
    evento, usuario = await world.evento(aforo=5), await world.usuario()
    process, address = await start_reservas(world, processes, tmp_path, "crashed", EVENTFLOW_FAULT="crash-after:ProcesadorPago")
    stub = world.connect(address)
    key = "charged-then-refunded"
    failure = await world.fails(stub.Reservar(world.request(usuario, evento.id, cantidad=2, key=key), timeout=30))
    assert failure.code == grpc.StatusCode.UNAVAILABLE
    assert await asyncio.to_thread(process.proc.wait, 30) == 137  # type: ignore[union-attr]
    reserva_id = await reserva_id_of(world, key)
    [charge] = [d async for d in world.db("reservas")["pagos"].find({"reserva_id": reserva_id})]
    refund = {**charge, "_id": f"{charge['_id']}-r", "tipo": "REEMBOLSO"}
    refund.pop("medio_pago", None)
    await world.db("reservas")["pagos"].insert_one(refund)  # what the dead recovery attempt did

    _, address = await start_reservas(world, processes, tmp_path, "recovery")
    world.reservas = world.connect(address)
    settled = await world.wait_settled(reserva_id, timeout=60)
    assert settled.estado == FALLIDA
    assert [p.monto for p in settled.pagos] == [3000, 3000]  # the charge, then its refund
    assert await world.ledger(reserva_id) == ["CARGO", "REEMBOLSO"]
    # (the world's teardown checks that every stream nets to what its ledger says)
