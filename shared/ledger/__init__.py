"""The pure ledger core: money, posting rules, the status machine, error types.

Imports nothing from Flask, Celery or SQLAlchemy, and does no I/O.
"""
