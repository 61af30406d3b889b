"""The signing keyring: rotation, retirement, JWKS, keys wrapped at rest, invalidation."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import redis
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import call_command
from django.utils import timezone

from audit.models import AuditEvent
from core.actors import Actor
from credentials import keyring, services, tokens
from tenants import context, invalidation
from tenants.models import SigningKey, SigningKeyStatus
from tests.credentials.helpers import bearer, error_code, token_pair

STAFF = Actor(kind="staff", id="1", label="staff@platform.test")


@pytest.fixture(autouse=True)
def _fresh_keyring():
    keyring.forget()
    yield
    keyring.forget()


def _rotate(capture, **options) -> SigningKey:
    with capture(execute=True):
        return services.signing_key_rotate(actor=STAFF, **options)


def test_a_fresh_database_has_one_active_key(db):
    keys = list(SigningKey.objects.all())
    assert [key.status for key in keys] == [SigningKeyStatus.ACTIVE]
    assert keyring.signing_key()[0] == keys[0].kid


def test_tokens_signed_before_a_rotation_verify_until_they_expire_then_not(
    org, client_for, django_capture_on_commit_callbacks
):
    old_kid = keyring.signing_key()[0]
    before = token_pair(org, org.viewer)
    new_key = _rotate(django_capture_on_commit_callbacks)
    after = token_pair(org, org.viewer)
    client = client_for(org)

    import jwt

    assert jwt.get_unverified_header(before.access)["kid"] == old_kid
    assert jwt.get_unverified_header(after.access)["kid"] == new_key.kid
    assert client.get("/api/v1/organization/", **bearer(before.access)).status_code == 200
    assert client.get("/api/v1/organization/", **bearer(after.access)).status_code == 200
    with context.public_context():
        previous = SigningKey.objects.get(kid=old_kid)
    assert previous.status == SigningKeyStatus.PREVIOUS
    assert previous.private_key_wrapped is None
    lifetime = timedelta(seconds=settings.JWT_REFRESH_TOKEN_LIFETIME_SECONDS)
    assert previous.verify_until - previous.rotated_at == lifetime
    assert {key["kid"] for key in client.get("/.well-known/jwks.json").json()["keys"]} == {
        old_kid,
        new_key.kid,
    }

    # Its tokens' lifetime is over: the previous key verifies nothing, even before retirement.
    with context.public_context():
        SigningKey.objects.filter(kid=old_kid).update(verify_until=timezone.now())
    keyring.forget()
    refused = client.get("/api/v1/organization/", **bearer(before.access))
    assert refused.status_code == 401 and error_code(refused) == "token_invalid"
    assert client.get("/api/v1/organization/", **bearer(after.access)).status_code == 200
    assert [key["kid"] for key in client.get("/.well-known/jwks.json").json()["keys"]] == [
        new_key.kid
    ]

    context.activate(None)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.signing_keys_retire_expired(actor=STAFF) == [old_kid]
    assert SigningKey.objects.get(kid=old_kid).status == SigningKeyStatus.RETIRED


def test_rotating_a_compromised_key_retires_it_at_once(
    org, client_for, django_capture_on_commit_callbacks
):
    before = token_pair(org, org.viewer)
    _rotate(django_capture_on_commit_callbacks, retire_previous_now=True)
    response = client_for(org).get("/api/v1/organization/", **bearer(before.access))
    assert response.status_code == 401


def test_retiring_a_previous_key(org, in_tenant, django_capture_on_commit_callbacks):
    old_kid = keyring.signing_key()[0]
    before = token_pair(org, org.viewer)
    _rotate(django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        services.signing_key_retire(actor=STAFF, kid=old_kid)
    with in_tenant(org), pytest.raises(tokens.TokenRefused):
        tokens.verify_access_token(before.access, tenant=org.tenant)
    event = AuditEvent.objects.filter(action="signing_key.retired").get()
    assert event.resource_id == old_kid


def test_the_active_key_cannot_be_retired(db):
    kid = keyring.signing_key()[0]
    with pytest.raises(ValidationError):
        services.signing_key_retire(actor=STAFF, kid=kid)


def test_only_staff_rotate(db):
    with pytest.raises(PermissionDenied):
        services.signing_key_rotate(actor=Actor(kind="user", id="1"))
    assert SigningKey.objects.count() == 1


def test_rotation_is_recorded_in_the_platform_log(db, django_capture_on_commit_callbacks):
    old_kid = keyring.signing_key()[0]
    new_key = _rotate(django_capture_on_commit_callbacks)
    event = AuditEvent.objects.filter(action="signing_key.rotated").get()
    assert event.tenant_id == "platform"
    assert event.resource_id == new_key.kid
    assert event.details["previous"] == old_kid
    assert "private" not in str(event.details).lower()


def test_private_keys_are_wrapped_at_rest_and_bound_to_their_kid(db):
    row = SigningKey.objects.get(status=SigningKeyStatus.ACTIVE)
    wrapped = bytes(row.private_key_wrapped)
    private_key = keyring.unwrap_private_key(row.kid, wrapped)
    der = private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert b"PRIVATE KEY" not in wrapped
    assert der not in wrapped and der[40:80] not in wrapped
    with pytest.raises(keyring.KeyringError):
        keyring.unwrap_private_key("another-kid", wrapped)


def test_a_wrong_wrapping_key_cannot_unwrap(db, settings):
    row = SigningKey.objects.get(status=SigningKeyStatus.ACTIVE)
    settings.SIGNING_KEY_WRAPPING_KEY = "A" * 43 + "="
    with pytest.raises(keyring.KeyringError, match="cannot unwrap"):
        keyring.unwrap_private_key(row.kid, bytes(row.private_key_wrapped))


def test_a_rotation_reaches_every_process_through_redis(db):
    """Another process's publish (here: a raw Redis client) makes this process drop its keyring."""
    invalidation.ensure_listening()
    keyring.current()
    assert keyring._keyring is not None
    redis.Redis.from_url(settings.REDIS_URL).publish(
        invalidation.channel(), keyring.INVALIDATION_TOPIC
    )
    deadline = time.monotonic() + 3
    while keyring._keyring is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert keyring._keyring is None


def test_the_rotate_command(db, capsys, django_capture_on_commit_callbacks):
    old_kid = keyring.signing_key()[0]
    with django_capture_on_commit_callbacks(execute=True):
        call_command("rotate_signing_key")
    active = SigningKey.objects.get(status=SigningKeyStatus.ACTIVE)
    assert active.kid != old_kid
    output = capsys.readouterr().out
    assert f"Active signing key: {active.kid}" in output
    assert f"Previous key {old_kid} verifies until" in output
    assert keyring.signing_key()[0] == active.kid


def test_the_admin_action_rotates(staff_user, public_client, django_capture_on_commit_callbacks):
    active = SigningKey.objects.get(status=SigningKeyStatus.ACTIVE)
    public_client.force_login(staff_user)
    with django_capture_on_commit_callbacks(execute=True):
        response = public_client.post(
            "/admin/tenants/signingkey/",
            {"action": "rotate", "_selected_action": [active.pk]},
        )
    assert response.status_code == 302
    assert SigningKey.objects.get(pk=active.pk).status == SigningKeyStatus.PREVIOUS
    new = SigningKey.objects.get(status=SigningKeyStatus.ACTIVE)
    event = AuditEvent.objects.filter(action="signing_key.rotated").get()
    assert event.actor_label == staff_user.email and event.resource_id == new.kid
