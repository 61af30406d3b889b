"""The product's settings without tenant routing: every request stays in `public`."""

from portal.settings import *  # noqa: F403
from portal.settings import MIDDLEWARE

ROOT_URLCONF = "routing_app.urls"
MIDDLEWARE = [name for name in MIDDLEWARE if name != "tenants.middleware.TenantRoutingMiddleware"]
