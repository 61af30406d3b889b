"""A staff support session reads an organization's portal pages only: its browser session does
not authenticate a WebSocket, on the organization's host or on another's."""

from __future__ import annotations

import uuid

import pytest

from tests.gateway.conftest import Client, host_of, run

pytestmark = pytest.mark.usefixtures("unblocked")


@pytest.fixture
def staff():
    """A committed staff account (the consumer's threads see committed rows only), deactivated
    afterwards: deleting it would collect tenant-only tables from `public`."""
    from accounts.models import User
    from tenants import context

    with context.public_context():
        user = User.objects.create_superuser(
            email=f"support-{uuid.uuid4().hex[:8]}@platform.test", password=None
        )
    yield user
    with context.public_context():
        User.objects.filter(pk=user.pk).update(is_active=False)


def test_a_support_sessions_cookie_opens_no_socket_in_a_or_b(pair, staff):
    from django.test import Client as HttpClient

    from core.actors import Actor
    from organizations import support

    a, b = pair
    session = support.support_session_open(
        actor=Actor.for_user(staff), tenant=a.tenant, reason="Ticket 9: sockets", minutes=15
    )
    browser = HttpClient(HTTP_HOST=a.host)
    started = browser.post(
        "/support/start/", {"token": support.support_token_make(session=session)}
    )
    assert started.status_code == 302 and browser.get("/").status_code == 200
    cookie = [(b"cookie", f"sessionid={browser.cookies['sessionid'].value}".encode())]

    async def body():
        replies = []
        for org in (a, b):
            origin = [(b"origin", f"http://{org.tenant.host}".encode())]
            socket = Client(host_of(org), [*cookie, *origin])
            await socket.connect()
            await socket.send(op="subscribe", subject=">")
            replies.append(await socket.receive())
        return replies

    on_a, on_b = run(body)
    assert on_a["error"]["code"] == on_b["error"]["code"] == "unauthenticated"
