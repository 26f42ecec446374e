"""usuarios: the service that owns user profiles and their purchase history (`historial_compras`)."""
