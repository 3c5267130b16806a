"""Keep the garbage collector's full collections short in long-running processes.

CPython's cyclic collector runs a full (generation 2) collection every so
often, and it walks every container object the process holds, holding the
GIL throughout: in the API that stops every request in flight. Most of
those objects are the process's imports and its built app (Flask,
SQLAlchemy, pydantic), made once at start and alive until exit. Measured
under ``tally bench http --rate 230`` (docs/benchmarks.md, series 11), the
API's full collections took 150 to 250 ms each; with those objects frozen,
20 to 70 ms.

``gc.freeze()`` moves every object tracked now into a permanent generation
that later collections skip (Python docs, "gc — Garbage Collector
interface", ``gc.freeze``); frozen objects are never freed, which is what
a process's imports and app are anyway. The docs' advice for a process that
forks workers is to freeze right before ``fork()``, so that the children
also share those pages instead of copying them when the collector would
have touched them.
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> int:
    """Collect garbage, then freeze every object alive now; return how many are frozen.

    Call it once a process has imported and built what it serves with: the
    API after its app is built (``api.asgi``), the worker right before it
    forks a pool process (``worker.app``). Calling it again freezes what was
    made since. The cycles collected first are garbage that freezing would
    otherwise keep forever.

    Returns:
        ``gc.get_freeze_count()``: objects in the permanent generation.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
