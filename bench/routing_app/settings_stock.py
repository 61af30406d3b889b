"""The product's settings with django-tenants' stock TenantMainMiddleware in place of ours."""

from portal.settings import *  # noqa: F403
from portal.settings import MIDDLEWARE

ROOT_URLCONF = "routing_app.urls"
MIDDLEWARE = ["django_tenants.middleware.main.TenantMainMiddleware"] + [
    name for name in MIDDLEWARE if name != "tenants.middleware.TenantRoutingMiddleware"
]
