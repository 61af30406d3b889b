"""Helpers for the agents tests: agents made by the real service and a config cache that starts
empty."""

from __future__ import annotations

from typing import Any

import pytest

from agents import config_cache, services
from core.actors import Actor

ROLES = ("viewer", "member", "admin", "owner")


def system() -> Actor:
    return Actor.system("tests")


def make_agent(name: str = "Summarizer", **fields: Any):
    """An agent created through the service (in the current organization's context)."""
    data = {"type": "worker", "cpu": "500m", "memory": "512MB", **fields}
    return services.agent_create(actor=system(), name=name, **data)


@pytest.fixture(autouse=True)
def _fresh_config_cache(request):
    """Tests roll their writes back, the Redis cache does not: start every test with a new
    generation for the session organizations and the platform."""
    if "_orgs" in request.fixturenames:  # only tests that use the database
        for org in request.getfixturevalue("_orgs").values():
            config_cache.invalidate(str(org.tenant.public_id))
    config_cache.invalidate(config_cache.PLATFORM)
    yield
