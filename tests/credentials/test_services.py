"""Credential services: API keys (create, revoke, use) and tokens (issue, refresh, revoke)."""

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.utils import timezone

from audit.models import AuditEvent
from core import errors
from core.actors import Actor
from credentials import api_keys, services, tokens
from credentials.models import ApiKey, RefreshToken
from tests.credentials.helpers import api_key, token_pair


def _events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("sequence"))


# API keys: creation ------------------------------------------------------------------------


def test_api_key_create_stores_only_a_keyed_hash(org, in_tenant):
    key, raw = api_key(org, ["org:read"], name="deploys")

    parsed = api_keys.parse(raw)
    assert parsed is not None and parsed.lookup_id == key.lookup_id
    assert raw.startswith("agp_") and len(raw) == api_keys.LENGTH
    with in_tenant(org):
        stored = ApiKey.objects.get(pk=key.pk)
        assert stored.secret_hash == api_keys.hash_secret(
            tenant_id=str(org.tenant.public_id), lookup_id=key.lookup_id, secret=parsed.secret
        )
        # The secret is nowhere in the schema: not in any text column of any table.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND data_type IN "
                "('text', 'character varying', 'jsonb')"
            )
            columns = cursor.fetchall()
            for table, column in columns:
                cursor.execute(
                    f'SELECT count(*) FROM "{table}" WHERE "{column}"::text LIKE %s',
                    [f"%{parsed.secret}%"],
                )
                assert cursor.fetchone()[0] == 0, (table, column)


def test_api_key_create_records_and_announces_it(
    org, in_tenant, django_capture_on_commit_callbacks, listen
):
    receive = listen(org.tenant, "api_key.created")
    with django_capture_on_commit_callbacks(execute=True):
        key, raw = api_key(org, ["org:read", "members:read"], name="deploys")
    message = receive()

    assert message["data"] == {
        "name": "deploys",
        "prefix": key.prefix,
        "scopes": ["members:read", "org:read"],
        "expires_at": None,
        "rate_limits": {},
    }
    with in_tenant(org):
        (event,) = _events("api_key.created")
    assert event.resource_id == str(key.pk)
    assert event.actor_label == org.admin.email
    assert raw not in str(event.details)


@pytest.mark.parametrize(
    ("scopes", "message"),
    [
        ([], "Give at least one scope."),
        (["no:such"], "Unknown scope “no:such”."),
        (["api_keys:manage"], "Unknown scope “api_keys:manage”."),
        ("org:read", "Give a list of scopes."),
    ],
)
def test_api_key_create_refuses_bad_scopes(org, in_tenant, scopes, message):
    with in_tenant(org), pytest.raises(ValidationError) as error:
        services.api_key_create(actor=Actor.for_user(org.admin), name="k", scopes=scopes)
    assert error.value.message_dict == {"scopes": [message]}
    with in_tenant(org):
        assert not ApiKey.objects.exists()


def test_a_user_cannot_grant_a_scope_their_role_lacks(org, in_tenant):
    # An admin does not hold members:grant_owner; and no key may carry it anyway.
    with in_tenant(org), pytest.raises(ValidationError) as error:
        services.api_key_create(
            actor=Actor.for_user(org.admin), name="k", scopes=["members:grant_owner"]
        )
    assert error.value.message_dict == {"scopes": ["Unknown scope “members:grant_owner”."]}


def test_scopes_are_bounded_by_the_role(org, in_tenant):
    actor = Actor(
        kind="user",
        id="1",
        role="admin",
        permissions=frozenset({"api_keys:manage"}),
        user=org.admin,
    )
    with in_tenant(org), pytest.raises(ValidationError) as error:
        services.api_key_create(actor=actor, name="k", scopes=["org:read"])
    assert error.value.message_dict == {
        "scopes": ["You cannot grant “org:read”: your role does not hold it."]
    }


def test_api_key_create_refuses_bad_name_and_past_expiry(org, in_tenant):
    with in_tenant(org), pytest.raises(ValidationError) as error:
        services.api_key_create(
            actor=Actor.for_user(org.admin),
            name="  ",
            scopes=["org:read"],
            expires_at=timezone.now() - timedelta(seconds=1),
        )
    assert error.value.message_dict == {
        "name": ["Give the key a name."],
        "expires_at": ["The expiry must be in the future."],
    }


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_api_key_create_is_denied_without_the_permission_and_recorded(org, in_tenant, role):
    with in_tenant(org), pytest.raises(PermissionDenied):
        services.api_key_create(actor=Actor.for_user(org.user(role)), name="k", scopes=["org:read"])
    with in_tenant(org):
        assert not ApiKey.objects.exists()
        (event,) = _events("api_key.created")
        assert event.result == "denied"


def test_api_key_create_fails_closed_when_redis_is_down(org, in_tenant, settings):
    settings.API_KEY_CREATE_RATE = "5/h"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    with in_tenant(org), pytest.raises(errors.RateLimiterUnavailable):
        services.api_key_create(actor=Actor.for_user(org.admin), name="k", scopes=["org:read"])
    with in_tenant(org):
        assert not ApiKey.objects.exists()


def test_api_key_create_is_rate_limited_per_user(org, in_tenant, settings):
    settings.API_KEY_CREATE_RATE = "2/h"
    owner = org.owner  # a user whose counter no other test touches at this rate
    actor = Actor(
        kind="user",
        id=f"rate-{timezone.now().timestamp()}",
        role="owner",
        permissions=Actor.for_user(owner).permissions,
        user=owner,
    )
    with in_tenant(org):
        services.api_key_create(actor=actor, name="a", scopes=["org:read"])
        services.api_key_create(actor=actor, name="b", scopes=["org:read"])
        with pytest.raises(errors.RateLimited) as error:
            services.api_key_create(actor=actor, name="c", scopes=["org:read"])
        assert ApiKey.objects.count() == 2
    assert 1 <= error.value.retry_after <= 3600


# API keys: revocation and use --------------------------------------------------------------


def test_api_key_revoke(org, in_tenant, django_capture_on_commit_callbacks):
    key, _ = api_key(org, ["org:read"])
    with in_tenant(org), django_capture_on_commit_callbacks(execute=True) as callbacks:
        services.api_key_revoke(actor=Actor.for_user(org.owner), key_id=key.pk)
    assert len(callbacks) == 1
    with in_tenant(org):
        revoked = ApiKey.objects.get(pk=key.pk)
        assert revoked.status == "revoked" and revoked.revoked_by == org.owner
        (event,) = _events("api_key.revoked")
        assert event.details == {"name": "test key", "prefix": key.prefix}


def test_api_key_revoke_by_a_member_is_denied_and_changes_nothing(org, in_tenant):
    key, _ = api_key(org, ["org:read"])
    with in_tenant(org), pytest.raises(PermissionDenied):
        services.api_key_revoke(actor=Actor.for_user(org.member), key_id=key.pk)
    with in_tenant(org):
        assert ApiKey.objects.get(pk=key.pk).revoked_at is None


def test_another_organizations_key_does_not_exist_here(org, other_org, in_tenant):
    key, _ = api_key(org, ["org:read"])
    with in_tenant(other_org), pytest.raises(ApiKey.DoesNotExist):
        services.api_key_revoke(actor=Actor.for_user(other_org.admin), key_id=key.pk)
    with in_tenant(org):
        assert ApiKey.objects.get(pk=key.pk).revoked_at is None


def test_api_key_use_is_written_once_a_day(org, in_tenant):
    key, _ = api_key(org, ["org:read"])
    actor = Actor(kind="api_key", id=str(key.pk), label=key.name)
    with in_tenant(org):
        assert services.api_key_record_use(actor=actor, key=key) is True
        stale = ApiKey.objects.get(pk=key.pk)  # another process's copy, read before the write
        stale.last_used_at = None
        assert services.api_key_record_use(actor=actor, key=stale) is False
        assert services.api_key_record_use(actor=actor, key=key) is False
        first = ApiKey.objects.get(pk=key.pk).last_used_at
        assert first is not None
        (event,) = _events("api_key.used")
        assert event.details["first_use_today"] is True
        # A day later it is written (and recorded) again.
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=first - timedelta(days=1))
        key.refresh_from_db()
        assert services.api_key_record_use(actor=actor, key=key) is True
        assert len(_events("api_key.used")) == 2


# Tokens ----------------------------------------------------------------------------------------


def test_token_pair_carries_the_claims(org, in_tenant):
    pair = token_pair(org, org.member)
    with in_tenant(org):
        access = tokens.verify_access_token(pair.access, tenant=org.tenant)
        refresh = tokens.verify_refresh_token(pair.refresh, tenant=org.tenant)
        (event,) = _events("token.issued")
        row = RefreshToken.objects.get(jti=refresh["jti"])
    assert access["sub"] == str(org.member.pk)
    assert access["tenant"] == access["aud"] == str(org.tenant.public_id)
    assert access["iss"] == org.tenant.url.rstrip("/")
    assert access["role"] == "member"
    assert access["permissions"] == sorted(Actor.for_user(org.member).permissions)
    assert access["exp"] - access["iat"] == 900
    assert refresh["exp"] - refresh["iat"] == 86400
    assert access["jti"] != refresh["jti"]
    assert row.user_id == org.member.pk and row.used_at is None
    assert pair.access not in str(event.details) and pair.refresh not in str(event.details)


def test_refresh_rotates_and_a_reused_token_revokes_the_family(org, in_tenant):
    first = token_pair(org, org.member)
    actor = Actor.anonymous()
    with in_tenant(org):
        second = services.token_refresh(actor=actor, refresh=first.refresh)
        third = services.token_refresh(actor=actor, refresh=second.refresh)

        with pytest.raises(errors.Unauthenticated) as reused:
            services.token_refresh(actor=actor, refresh=first.refresh)
        assert reused.value.code == "token_reused"
        # The thief's replay also ended the legitimate holder's chain.
        with pytest.raises(errors.Unauthenticated) as revoked:
            services.token_refresh(actor=actor, refresh=third.refresh)
        assert revoked.value.code == "token_revoked"
        assert not RefreshToken.objects.filter(revoked_at__isnull=True).exists()
        assert [e.result for e in _events("token.reuse_detected")] == ["denied"]


def test_token_revoke_ends_the_family(org, in_tenant):
    first = token_pair(org, org.viewer)
    with in_tenant(org):
        second = services.token_refresh(actor=Actor.anonymous(), refresh=first.refresh)
        services.token_revoke(actor=Actor.anonymous(), refresh=second.refresh)
        with pytest.raises(errors.Unauthenticated) as error:
            services.token_refresh(actor=Actor.anonymous(), refresh=second.refresh)
        assert error.value.code == "token_revoked"
        (event,) = _events("token.revoked")
        assert event.details["revoked"] == 2  # the used first one and its live successor


def test_refresh_for_a_deactivated_user_is_refused(org, in_tenant):
    pair = token_pair(org, org.viewer)
    with in_tenant(org):
        org.viewer.__class__.objects.filter(pk=org.viewer.pk).update(is_active=False)
        with pytest.raises(errors.Unauthenticated) as error:
            services.token_refresh(actor=Actor.anonymous(), refresh=pair.refresh)
    assert error.value.code == "user_inactive"


def test_an_access_token_is_not_a_refresh_token(org, in_tenant):
    pair = token_pair(org, org.viewer)
    with in_tenant(org), pytest.raises(errors.Unauthenticated) as error:
        services.token_refresh(actor=Actor.anonymous(), refresh=pair.access)
    assert error.value.code == "token_wrong_type"
    with in_tenant(org):
        (event,) = _events("auth.failed")
    assert (event.details["scheme"], event.details["code"]) == ("refresh", "token_wrong_type")
    assert event.details["count"] == 1
