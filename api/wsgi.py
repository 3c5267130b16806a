"""WSGI entry point (``api.wsgi:app``) for WSGI servers; ``tally serve web`` runs ``api.asgi``.

Under a plain WSGI server ``?wait=N`` answers at once: the wait lives in ``api.asgi``.
"""

from api import create_app

app = create_app()
