"""WebSocket routes of an organization's host."""

from django.urls import path

from gateway.consumers import EventsConsumer

websocket_urlpatterns = [path("ws/events/", EventsConsumer.as_asgi())]
