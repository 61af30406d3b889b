"""Project wiring: settings, URL maps, ASGI/WSGI entry points and the portal shell."""
