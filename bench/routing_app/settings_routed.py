"""The product's settings and middleware (tenants.middleware.TenantRoutingMiddleware in it)."""

from portal.settings import *  # noqa: F403
from portal.settings import MIDDLEWARE

ROOT_URLCONF = "routing_app.urls"
assert "tenants.middleware.TenantRoutingMiddleware" in MIDDLEWARE  # noqa: S101
