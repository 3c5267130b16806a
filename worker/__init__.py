"""The Celery side of Tally: the app, its thin tasks and the beat schedule."""
