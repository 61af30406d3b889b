"""gunicorn.conf.py: read by gunicorn from the project directory, and its worker hook freezes the
loaded application out of the garbage collector's full collections."""

from __future__ import annotations

import subprocess
import sys

from django.conf import settings


def test_gunicorn_reads_the_projects_config_and_its_worker_hook() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--print-config", "portal.wsgi:application"],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    settings_printed = dict(
        (name.strip(), value.strip())
        for name, _, value in (line.partition("=") for line in printed.splitlines())
    )
    assert settings_printed["config"] == "./gunicorn.conf.py"
    assert settings_printed["post_worker_init"] == "<post_worker_init()>"


def test_the_worker_hook_freezes_what_is_loaded_and_full_collections_skip_it() -> None:
    # In a fresh interpreter (freezing is for the whole process): load Django as a worker does,
    # run the hook, and check that the loaded objects left the collector's generations.
    code = """
import gc, runpy, sys
import django
django.setup()
import portal.urls  # what a worker has loaded once it serves
before = len(gc.get_objects())
assert gc.get_freeze_count() == 0, gc.get_freeze_count()
runpy.run_path("gunicorn.conf.py")["post_worker_init"](None)
frozen = gc.get_freeze_count()
assert frozen >= before * 0.9, (frozen, before)
assert len(gc.get_objects()) < before * 0.1, (len(gc.get_objects()), before)
print(frozen)
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.split()[-1]) > 10_000
