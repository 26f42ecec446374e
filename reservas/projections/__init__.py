"""Reservas' read side (CQRS): read models fed asynchronously from the event store.

- `read_models.py`: the collections `reservas_vista` and `estadisticas_evento` and the one
  guarded, transactional way they change;
- `projector.py`: follows the event store's change stream, with a durable checkpoint
  (`checkpoint.py`);
- `rebuild.py`: builds the models from every stream (`eventflow projections rebuild`);
- `poison.py` / `dead_letters.py`: a stream the models cannot take is retried, then set aside in the dead
  letters and skipped, so the projector never stalls (`eventflow projections dead-letters`,
  `replay-dead-letters`);
- `queries.py` / `messages.py`: ListReservas and GetEstadisticasEvento, from the models only;
- `cli.py`: `eventflow projector` and `eventflow projections ...`.
"""
