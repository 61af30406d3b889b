"""Fixtures of the API identity tests."""

import pytest


@pytest.fixture(autouse=True)
def _generous_rate_limits(settings):
    """Counters live in Redis across tests: only the rate-limit tests set real limits."""
    settings.API_TOKEN_RATE_PER_IP = "100000/m"
    settings.API_TOKEN_RATE_PER_ACCOUNT = "100000/m"
    settings.API_KEY_CREATE_RATE = "100000/h"


@pytest.fixture(autouse=True)
def _fresh_keyring():
    """Rotations inside a rolled-back test must not outlive it in this process's keyring."""
    from credentials import keyring

    keyring.forget()
    yield
    keyring.forget()
