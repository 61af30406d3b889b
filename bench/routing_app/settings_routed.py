"""The product's settings and middleware (tenants.middleware.TenantRoutingMiddleware first)."""

from portal.settings import *  # noqa: F403
from portal.settings import MIDDLEWARE

ROOT_URLCONF = "routing_app.urls"
assert MIDDLEWARE[0] == "tenants.middleware.TenantRoutingMiddleware"  # noqa: S101
