"""The scene a fuzz run starts from, made through the services' own APIs with the admin token.

Users (some of them disposable, for DeleteUsuario), events of several sizes (one that sells out at once,
two seated ones, disposable ones for DeleteEvento, one of them with a sale so that deleting it is refused),
reservations in every state (CONFIRMADA, FALLIDA after a declined card, CANCELADA), and a page token of each
List RPC. What the stack then holds, demo data included, is the `Pool` valid values are drawn from.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import grpc

from eventflow.eventos.v1 import eventos_pb2, eventos_pb2_grpc
from eventflow.reservas.v1 import reservas_pb2, reservas_pb2_grpc
from eventflow.usuarios.v1 import usuarios_pb2, usuarios_pb2_grpc
from infra.errors import error_info
from tests.fuzz.generate import Pool
from tests.fuzz.tokens import bearer

TIMEOUT = 20


def _fecha(days: int) -> eventos_pb2.Evento:
    evento = eventos_pb2.Evento()
    evento.fecha.FromDatetime(datetime.now(UTC).replace(microsecond=0) + timedelta(days=days))
    return evento


def build(addresses: Mapping[str, str], admin_token: str, usuarios: int = 5) -> Pool:
    auth = bearer(admin_token)
    with (grpc.insecure_channel(addresses["usuarios"]) as u, grpc.insecure_channel(addresses["eventos"]) as e,
          grpc.insecure_channel(addresses["reservas"]) as r):  # fmt: skip
        users = usuarios_pb2_grpc.UsuariosServiceStub(u)
        events = eventos_pb2_grpc.EventosServiceStub(e)
        reservas = reservas_pb2_grpc.ReservasServiceStub(r)

        def usuario(name: str, documento: int) -> str:
            profile = usuarios_pb2.Usuario(tipo_documento="CI", nro_documento=str(documento),
                                           nombre=name.title(), apellido="Fuzz", email=f"{name}@example.com")  # fmt: skip
            return users.CreateUsuario(usuarios_pb2.CreateUsuarioRequest(usuario=profile), timeout=TIMEOUT,
                                       metadata=auth).id  # fmt: skip

        def evento(nombre: str, aforo: int = 0, seats: tuple[str, ...] = ()) -> str:
            draft = _fecha(30)
            draft.MergeFrom(eventos_pb2.Evento(nombre=nombre, lugar="Sala Fuzz", aforo_total=aforo or len(seats),
                                               precio=150_000, moneda="UYU", asientos=seats))  # fmt: skip
            return events.CreateEvento(eventos_pb2.CreateEventoRequest(evento=draft), timeout=TIMEOUT, metadata=auth).id

        def reservar(usuario_id: str, evento_id: str, key: str, seats: tuple[str, ...] = (), pago: str = "tok_visa") -> str:
            request = reservas_pb2.ReservarRequest(usuario_id=usuario_id, evento_id=evento_id, cantidad=len(seats) or 1,
                                                   asientos=seats, medio_pago=pago, idempotency_key=key)  # fmt: skip
            try:
                return reservas.Reservar(request, timeout=TIMEOUT, metadata=auth).id
            except grpc.RpcError as error:  # a declined card: the FALLIDA reservation's id is in the ErrorInfo
                info = error_info(error)
                if info is None or "reserva_id" not in info.metadata:
                    raise
                return info.metadata["reserva_id"]

        people = [usuario(f"fuzz.scene{i}", 4_100_000 + i) for i in range(usuarios)]
        disposable_people = [usuario(f"fuzz.disposable{i}", 4_200_000 + i) for i in range(3)]
        grande, chico = evento("Fuzz grande", 2000), evento("Fuzz chico", 3)
        evento("Fuzz medio", 300)
        sala = evento("Fuzz sala", seats=tuple(f"{row}-{n}" for row in "AB" for n in range(1, 16)))
        evento("Fuzz mini sala", seats=("X-1", "X-2", "X-3", "X-4"))
        disposable_events = [evento(f"Fuzz descartable {i}", 10) for i in range(3)]
        disposable_events.append(evento("Fuzz descartable con asientos", seats=("D-1", "D-2")))

        owners: dict[str, str] = {}
        for i, person in enumerate(people):
            owners[reservar(person, grande, f"scene-{i}")] = person
        owners[reservar(people[0], sala, "scene-sala-0", ("A-1", "A-2"))] = people[0]
        owners[reservar(people[1], sala, "scene-sala-1", ("B-1",))] = people[1]
        owners[reservar(people[1], chico, "scene-chico")] = people[1]
        owners[reservar(people[0], disposable_events[0], "scene-disposable")] = people[0]
        owners[reservar(people[2], grande, "scene-declined", pago="tok_declined")] = people[2]
        cancelled = next(r for r, owner in owners.items() if owner == people[3])
        reservas.CancelarReserva(reservas_pb2.CancelarReservaRequest(id=cancelled), timeout=TIMEOUT, metadata=auth)

        listed_users = users.ListUsuarios(usuarios_pb2.ListUsuariosRequest(page_size=500), timeout=TIMEOUT, metadata=auth)
        listed_events = events.ListEventos(eventos_pb2.ListEventosRequest(page_size=500), timeout=TIMEOUT, metadata=auth)
        seat_maps = {}
        for listed in listed_events.eventos:
            if listed.con_asientos:
                full = events.GetEvento(eventos_pb2.GetEventoRequest(id=listed.id), timeout=TIMEOUT, metadata=auth)
                seat_maps[listed.id] = tuple(full.asientos)
        page_tokens = (
            users.ListUsuarios(usuarios_pb2.ListUsuariosRequest(page_size=1), timeout=TIMEOUT, metadata=auth).next_page_token,
            events.ListEventos(eventos_pb2.ListEventosRequest(page_size=1), timeout=TIMEOUT, metadata=auth).next_page_token,
            reservas.ListReservas(reservas_pb2.ListReservasRequest(page_size=1), timeout=TIMEOUT, metadata=auth).next_page_token,
        )
    return Pool(
        usuarios=tuple(x.id for x in listed_users.usuarios),
        eventos=tuple(x.id for x in listed_events.eventos),
        asientos=seat_maps,
        reservas=owners,
        disposable_usuarios=tuple(disposable_people),
        disposable_eventos=tuple(disposable_events),
        page_tokens=tuple(t for t in page_tokens if t),
    )


def scene_usuarios(pool: Pool) -> list[str]:
    """The users a cliente token is minted for: owners of reservations, a disposable user (it may be deleted)."""
    return sorted(set(pool.reservas.values())) + list(pool.disposable_usuarios[:1])
