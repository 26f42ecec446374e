"""What failures look like with the Python client: each is an exception that carries the status code, the
ErrorInfo reason and its metadata. make run, paste its `export TOKEN=...` line, python examples/errors.py"""

import os
import secrets
from datetime import UTC, datetime, timedelta

from eventflow.client import (
    EventFlowError,
    InvalidArgument,
    NotFound,
    PaymentDeclined,
    SoldOut,
    connect,
    name,
    timestamp,
)
from eventflow.eventos.v1 import eventos_pb2
from eventflow.reservas.v1 import reservas_pb2
from eventflow.usuarios.v1 import usuarios_pb2


def show(error: EventFlowError) -> None:
    print(f"  {type(error).__name__}: {error.code().name} {error.reason} {error.metadata}\n    {error.message}")


with connect(token=os.environ["TOKEN"]) as ef:
    tag = secrets.token_hex(4)
    ana = ef.usuarios.CreateUsuario(usuarios_pb2.CreateUsuarioRequest(usuario=usuarios_pb2.Usuario(
        tipo_documento="CI", nro_documento=tag, nombre="Ana", apellido="Pérez", email=f"ana.{tag}@example.com")))
    # An event with one ticket, a month from now (a Timestamp from a datetime).
    evento = ef.eventos.CreateEvento(eventos_pb2.CreateEventoRequest(evento=eventos_pb2.Evento(
        nombre=f"Ensayo {tag}", lugar="Sala Zitarrosa", fecha=timestamp(datetime.now(UTC) + timedelta(days=30)),
        aforo_total=1, precio=50000)))

    def buy(cantidad: int, medio_pago: str = "tok_visa") -> reservas_pb2.Reserva:
        return ef.reservas.Reservar(reservas_pb2.ReservarRequest(usuario_id=ana.id, evento_id=evento.id,
            cantidad=cantidad, medio_pago=medio_pago, idempotency_key=secrets.token_hex(8)))

    print("a user that does not exist:")
    try:
        ef.usuarios.GetUsuario(usuarios_pb2.GetUsuarioRequest(id="nadie"))
    except NotFound as error:
        show(error)

    print("a field out of its range (metadata names it):")
    try:
        buy(11)
    except InvalidArgument as error:
        show(error)

    print("a declined payment (the failed reservation is kept, FALLIDA, with why):")
    try:
        buy(1, "tok_declined")
    except PaymentDeclined as error:
        show(error)
        failed = ef.reservas.GetReserva(reservas_pb2.GetReservaRequest(id=error.reserva_id))
        print(f"  GetReserva: {name(reservas_pb2.EstadoReserva, failed.estado)}, motivo: {failed.motivo}")

    print("more tickets than are left:")
    try:
        buy(2)
    except SoldOut as error:
        show(error)
