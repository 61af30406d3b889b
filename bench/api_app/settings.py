"""The product's settings, with one bench-only URL beside the product's (the floor view)."""

from portal.settings import *  # noqa: F403

ROOT_URLCONF = "api_app.urls"
