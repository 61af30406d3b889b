"""gunicorn's settings for the portal (gunicorn reads ./gunicorn.conf.py from its working
directory by default; `-c gunicorn.conf.py` from elsewhere). docs/operations.md, "Database
connections" and "Request latency with many organizations"."""

from __future__ import annotations

import gc


def post_worker_init(worker) -> None:
    """Once the worker has loaded the application (Django, every module, the URL and template
    machinery: ~90,000 objects the collector would otherwise walk on every full collection),
    move what is alive to the permanent generation. A full collection then walks only what
    came later (per-organization caches, requests), so the pauses it puts into a request stay
    short however long the worker lives. Frozen objects are still freed when unreferenced."""
    freeze_loaded_objects()


def freeze_loaded_objects() -> int:
    """Collect, then freeze what survives; returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
