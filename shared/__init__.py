"""Code shared by the API and the worker: config, database, models, the ledger core, services.

Nothing under ``shared`` imports Flask or Celery; ``shared.ledger`` imports nothing
outside the standard library and babel.
"""
