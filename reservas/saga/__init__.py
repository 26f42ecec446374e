"""The purchase saga: four steps linked as a Chain of Responsibility, and their orchestrator.

    ValidadorDatos -> ValidadorInventario -> ProcesadorPago -> ConfirmadorReserva
         (none)       LiberarEntradas+holds      refund            AnularCompra     <- compensations

Assembled in `chain.py`; driven (with a lease) by `driver.py`; undone by `saga.py`.
"""
