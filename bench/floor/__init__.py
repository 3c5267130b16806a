"""The floor of the intake: the least a Python server does per submission, measured beside Tally.

``app.py`` is a minimal Flask app that parses the JSON body, runs one
``INSERT`` and commits (psycopg pool, fsync on) and answers 202;
``servers.py`` puts it behind each bridge under test; ``measure.sh`` runs
wrk against one server and prints its CPU per request (docs/benchmarks.md,
series 8).
"""
