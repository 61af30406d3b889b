"""ASGI entry point: HTTP through Django, `/ws/events/` through Channels (the gateway).

The WebSocket consumer resolves the tenant from the Host header with tenants.routing, as the
HTTP middleware does, and enters its context around every database access.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

# Django is set up (apps loaded) before the consumers' imports touch models.
django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from gateway.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {"http": django_application, "websocket": URLRouter(websocket_urlpatterns)}
)
