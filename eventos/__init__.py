"""eventos: events, their capacity and seat maps, and the tickets still on sale (EventosService)."""
