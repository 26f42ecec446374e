"""A purchase with the Python client: make run, paste its `export TOKEN=...` line, python examples/purchase.py"""

import os
import secrets

from eventflow.client import SoldOut, connect, name
from eventflow.eventos.v1 import eventos_pb2
from eventflow.reservas.v1 import reservas_pb2
from eventflow.usuarios.v1 import usuarios_pb2

with connect(token=os.environ["TOKEN"]) as ef:  # localhost:50051..50053, or $USUARIOS_ADDR, ...
    tag = secrets.token_hex(4)
    ana = ef.usuarios.CreateUsuario(usuarios_pb2.CreateUsuarioRequest(usuario=usuarios_pb2.Usuario(
        tipo_documento="CI", nro_documento=tag, nombre="Ana", apellido="Pérez", email=f"ana.{tag}@example.com")))
    eventos = ef.eventos.ListEventos(eventos_pb2.ListEventosRequest(page_size=50)).eventos
    evento = next(e for e in eventos if not e.con_asientos and e.entradas_disponibles >= 2)
    try:
        reserva = ef.reservas.Reservar(reservas_pb2.ReservarRequest(usuario_id=ana.id, evento_id=evento.id,
            cantidad=2, medio_pago="tok_visa", idempotency_key=f"compra-{tag}"))  # a retry buys nothing twice
    except SoldOut as error:
        print(f"{evento.nombre}: sold out ({error.message})")
    else:
        print(f"{name(reservas_pb2.EstadoReserva, reserva.estado)}: {reserva.cantidad} tickets for {evento.nombre},"
              f" {reserva.monto / 100:.2f} {reserva.moneda}, reservation {reserva.id}")
