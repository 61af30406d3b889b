"""The credentials API: tokens (obtain, refresh, revoke) and API keys, by role and organization."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import User
from audit.models import AuditEvent
from core.actors import Actor
from credentials.authentication import CredentialRefused, verify_api_key
from credentials.models import ApiKey
from tests.conftest import PASSWORD
from tests.credentials.helpers import (
    api_key,
    api_key_header,
    bearer,
    error_code,
    post_json,
    token_pair,
)

TOKEN = "/api/v1/auth/token"
REFRESH = "/api/v1/auth/token/refresh"
REVOKE = "/api/v1/auth/token/revoke"
KEYS = "/api/v1/api-keys/"
ORGANIZATION = "/api/v1/organization/"
DEAD_REDIS = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
    }
}


def _events(org, in_tenant, action: str) -> list[AuditEvent]:
    with in_tenant(org):
        return list(AuditEvent.objects.filter(action=action).order_by("sequence"))


# Tokens ------------------------------------------------------------------------------------


def test_token_obtain_returns_a_pair(org, client_for, in_tenant):
    client = client_for(org)
    response = post_json(client, TOKEN, {"username": "Member@Acme.test", "password": PASSWORD})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access", "refresh", "token_type", "expires_in", "refresh_expires_in"}
    assert body["token_type"] == "Bearer"
    assert (body["expires_in"], body["refresh_expires_in"]) == (900, 86400)
    assert response["Cache-Control"] == "no-store"
    assert client.get(ORGANIZATION, **bearer(body["access"])).status_code == 200
    (event,) = _events(org, in_tenant, "token.issued")
    assert event.actor_label == "member@acme.test"


@pytest.mark.parametrize(
    "credentials",
    [
        {"username": "member@acme.test", "password": "wrong"},
        {"username": "nobody@acme.test", "password": PASSWORD},
        {"username": "member@globex.test", "password": PASSWORD},  # another org's account
    ],
)
def test_token_obtain_refuses_wrong_credentials(org, client_for, in_tenant, credentials):
    response = post_json(client_for(org), TOKEN, credentials)
    assert response.status_code == 401
    assert error_code(response) == "invalid_credentials"
    (event,) = _events(org, in_tenant, "auth.login")
    assert (event.result, event.resource_id, event.details["method"]) == (
        "failed",
        credentials["username"],
        "api_token",
    )
    assert event.details["count"] == 1
    assert credentials["password"] not in str(event.details)


def test_token_obtain_refuses_a_deactivated_account(org, client_for, in_tenant):
    with in_tenant(org):
        User.objects.filter(pk=org.viewer.pk).update(is_active=False)
    response = post_json(
        client_for(org), TOKEN, {"username": org.viewer.email, "password": PASSWORD}
    )
    assert response.status_code == 401
    assert error_code(response) == "invalid_credentials"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"username": "member@acme.test"}, {"password": ["This field is required."]}),
        (
            {"username": "member@acme.test", "password": PASSWORD, "tenant": "x"},
            {"tenant": ["Unknown field."]},
        ),
        (
            ["member@acme.test"],
            {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]},
        ),
    ],
)
def test_token_obtain_refuses_bad_input(org, client_for, body, detail):
    response = post_json(client_for(org), TOKEN, body)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "invalid",
        "message": "The request is invalid.",
        "detail": detail,
    }


def test_token_obtain_is_rate_limited_per_account(org, client_for, settings):
    settings.API_TOKEN_RATE_PER_ACCOUNT = "3/m"
    client = client_for(org)
    email = f"guess-{uuid.uuid4().hex[:8]}@acme.test"
    statuses = [
        post_json(client, TOKEN, {"username": email, "password": "x"}).status_code for _ in range(3)
    ]
    limited = post_json(client, TOKEN, {"username": email, "password": "x"})

    assert statuses == [401, 401, 401]
    assert limited.status_code == 429
    assert error_code(limited) == "rate_limited"
    assert 1 <= int(limited["Retry-After"]) <= 60
    assert limited["RateLimit-Policy"] == '"token_obtain_account";q=3;w=60'
    assert limited["RateLimit"].startswith('"token_obtain_account";r=0;t=')


def test_token_obtain_is_rate_limited_per_address(org, client_for, settings):
    settings.API_TOKEN_RATE_PER_IP = "2/m"
    client = client_for(org)
    address = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.7"
    for number in range(2):
        post_json(
            client,
            TOKEN,
            {"username": f"a{number}@acme.test", "password": "x"},
            REMOTE_ADDR=address,
        )
    limited = post_json(
        client, TOKEN, {"username": org.member.email, "password": PASSWORD}, REMOTE_ADDR=address
    )
    assert limited.status_code == 429


def test_rate_limits_are_per_organization(org, other_org, client_for, settings):
    settings.API_TOKEN_RATE_PER_IP = "1/m"
    address = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.8"
    post_json(
        client_for(org), TOKEN, {"username": "x@acme.test", "password": "x"}, REMOTE_ADDR=address
    )
    response = post_json(
        client_for(other_org),
        TOKEN,
        {"username": other_org.member.email, "password": PASSWORD},
        REMOTE_ADDR=address,
    )
    assert response.status_code == 200


def test_token_obtain_fails_closed_when_redis_is_down(org, client_for, settings, in_tenant):
    settings.CACHES = DEAD_REDIS
    response = post_json(
        client_for(org), TOKEN, {"username": org.member.email, "password": PASSWORD}
    )
    assert response.status_code == 503
    assert error_code(response) == "rate_limiter_unavailable"
    assert response["Retry-After"] == "30"
    assert _events(org, in_tenant, "token.issued") == []


def test_refresh_rotates_and_reuse_is_refused(org, client_for):
    client = client_for(org)
    first = token_pair(org, org.member)
    second = post_json(client, REFRESH, {"refresh": first.refresh})
    assert second.status_code == 200
    assert second.json()["refresh"] != first.refresh

    reused = post_json(client, REFRESH, {"refresh": first.refresh})
    assert reused.status_code == 401
    assert error_code(reused) == "token_reused"
    after_reuse = post_json(client, REFRESH, {"refresh": second.json()["refresh"]})
    assert error_code(after_reuse) == "token_revoked"


def test_revoke_ends_the_refresh_token(org, client_for):
    client = client_for(org)
    pair = token_pair(org, org.member)
    response = post_json(client, REVOKE, {"refresh": pair.refresh})
    assert response.status_code == 204
    refused = post_json(client, REFRESH, {"refresh": pair.refresh})
    assert refused.status_code == 401 and error_code(refused) == "token_revoked"


def test_another_organizations_refresh_token_is_refused(org, other_org, client_for):
    pair = token_pair(org, org.member)
    response = post_json(client_for(other_org), REFRESH, {"refresh": pair.refresh})
    assert response.status_code == 401 and error_code(response) == "token_invalid"


# API keys over the API: role matrix and organizations ---------------------------------------


def _credentials(org, other_org, principal: str) -> dict[str, str]:
    if principal == "anonymous":
        return {}
    if principal == "other org's admin":
        return bearer(token_pair(other_org, other_org.admin).access)
    return bearer(token_pair(org, org.user(principal)).access)


ROLE_MATRIX = [
    ("anonymous", 401),
    ("viewer", 403),
    ("member", 403),
    ("admin", None),
    ("owner", None),
    ("other org's admin", 401),
]


@pytest.mark.parametrize(("principal", "refused"), ROLE_MATRIX)
def test_api_key_list_by_role(org, other_org, client_for, principal, refused):
    key, _ = api_key(org, ["org:read"])
    response = client_for(org).get(KEYS, **_credentials(org, other_org, principal))
    if refused:
        assert response.status_code == refused
        return
    assert response.status_code == 200
    assert response.json()["count"] == 1
    (listed,) = response.json()["results"]
    assert listed == {
        "id": key.pk,
        "name": "test key",
        "prefix": key.prefix,
        "scopes": ["org:read"],
        "rate_limits": {},
        "status": "active",
        "created_at": listed["created_at"],
        "created_by": org.admin.email,
        "last_used_at": None,
        "expires_at": None,
        "revoked_at": None,
    }


@pytest.mark.parametrize(("principal", "refused"), ROLE_MATRIX)
def test_api_key_create_by_role(org, other_org, client_for, in_tenant, principal, refused):
    headers = _credentials(org, other_org, principal)
    response = post_json(client_for(org), KEYS, {"name": "ci", "scopes": ["org:read"]}, **headers)
    with in_tenant(org):
        keys = list(ApiKey.objects.all())
    if refused:
        assert response.status_code == refused
        assert keys == []
        return
    assert response.status_code == 201
    body = response.json()
    assert body["key"].startswith(body["prefix"])
    assert response["Cache-Control"] == "no-store"
    assert [key.pk for key in keys] == [body["id"]]
    assert keys[0].created_by_id == org.user(principal).pk
    # Shown once: neither the detail nor the list ever carries it again.
    detail = client_for(org).get(f"{KEYS}{body['id']}/", **headers)
    assert "key" not in detail.json()
    assert body["key"] not in client_for(org).get(KEYS, **headers).content.decode()


@pytest.mark.parametrize(("principal", "refused"), ROLE_MATRIX)
def test_api_key_revoke_by_role(org, other_org, client_for, in_tenant, principal, refused):
    key, raw = api_key(org, ["org:read"])
    headers = _credentials(org, other_org, principal)
    response = client_for(org).delete(f"{KEYS}{key.pk}/", **headers)
    with in_tenant(org):
        stored = ApiKey.objects.get(pk=key.pk)
    if refused:
        assert response.status_code == refused
        assert stored.revoked_at is None
        return
    assert response.status_code == 204
    assert stored.status == "revoked"
    refused_key = client_for(org).get(ORGANIZATION, **api_key_header(raw))
    assert refused_key.status_code == 401 and error_code(refused_key) == "api_key_revoked"


def test_another_organizations_admin_gets_404_for_our_keys(org, other_org, client_for, in_tenant):
    key, raw = api_key(org, ["org:read"])
    theirs = bearer(token_pair(other_org, other_org.admin).access)
    client = client_for(other_org)

    assert client.get(KEYS, **theirs).json()["count"] == 0
    for response in (
        client.get(f"{KEYS}{key.pk}/", **theirs),
        client.delete(f"{KEYS}{key.pk}/", **theirs),
    ):
        assert response.status_code == 404
        assert error_code(response) == "not_found"
    with in_tenant(org):
        assert ApiKey.objects.get(pk=key.pk).revoked_at is None
    # Our key is worthless on their host.
    refused = client.get(ORGANIZATION, **api_key_header(raw))
    assert refused.status_code == 401 and error_code(refused) == "api_key_invalid"


def test_unknown_key_id_is_404(org, client_for):
    headers = bearer(token_pair(org, org.admin).access)
    response = client_for(org).delete(f"{KEYS}987654/", **headers)
    assert response.status_code == 404


def test_api_key_list_query_count_is_constant(org, client_for, django_assert_num_queries):
    for number in range(3):
        api_key(org, ["org:read"], name=f"k{number}")
    headers = bearer(token_pair(org, org.admin).access)
    client = client_for(org)
    client.get(KEYS, **headers)  # warm the routing and keyring caches
    # user (token's account), page of keys with their creators (it holds them all: no COUNT)
    with django_assert_num_queries(2):
        response = client.get(KEYS, **headers)
    assert response.json()["count"] == 3


def test_mass_assignment_is_refused(org, client_for, in_tenant):
    headers = bearer(token_pair(org, org.admin).access)
    response = post_json(
        client_for(org),
        KEYS,
        {
            "name": "ci",
            "scopes": ["org:read"],
            "tenant_id": "other",
            "role": "owner",
            "secret_hash": "0" * 64,
            "lookup_id": "AAAAAAAAAAAA",
            "created_by": org.owner.pk,
        },
        **headers,
    )
    assert response.status_code == 400
    assert response.json()["error"]["detail"] == {
        name: ["Unknown field."]
        for name in ["created_by", "lookup_id", "role", "secret_hash", "tenant_id"]
    }
    with in_tenant(org):
        assert not ApiKey.objects.exists()


def test_a_scope_the_role_lacks_is_refused(org, client_for, in_tenant):
    headers = bearer(token_pair(org, org.admin).access)
    response = post_json(
        client_for(org), KEYS, {"name": "ci", "scopes": ["members:grant_owner"]}, **headers
    )
    assert response.status_code == 400  # not a scope a key can carry: outside the enum
    assert response.json()["error"]["detail"] == {
        "scopes": {"0": ['"members:grant_owner" is not a valid choice.']}
    }
    # A scope keys can carry, which an admin's role lacks: the caller may not (403).
    lacking = post_json(
        client_for(org), KEYS, {"name": "ci", "scopes": ["billing:read"]}, **headers
    )
    assert lacking.status_code == 403
    assert lacking.json()["error"] == {
        "code": "permission_denied",
        "message": "You cannot grant “billing:read”: your role does not hold it.",
        "detail": {"scopes": ["You cannot grant “billing:read”: your role does not hold it."]},
    }
    with in_tenant(org):
        assert not ApiKey.objects.filter(name="ci").exists()


def test_api_key_create_fails_closed_when_redis_is_down(org, client_for, in_tenant, settings):
    headers = bearer(token_pair(org, org.admin).access)
    settings.CACHES = DEAD_REDIS
    response = post_json(client_for(org), KEYS, {"name": "ci", "scopes": ["org:read"]}, **headers)
    assert response.status_code == 503
    with in_tenant(org):
        assert not ApiKey.objects.exists()


# API keys as credentials -------------------------------------------------------------------


def test_a_key_works_and_its_use_is_noted(org, client_for, in_tenant):
    key, raw = api_key(org, ["org:read"])
    response = client_for(org).get(ORGANIZATION, **api_key_header(raw))
    assert response.status_code == 200
    with in_tenant(org):
        assert ApiKey.objects.get(pk=key.pk).last_used_at is not None
    (event,) = _events(org, in_tenant, "api_key.used")
    assert event.actor_kind == "api_key" and event.actor_id == str(key.pk)


def test_scopes_are_enforced_per_endpoint(org, client_for):
    _, raw = api_key(org, ["members:read"])
    client = client_for(org)
    response = client.get(ORGANIZATION, **api_key_header(raw))
    assert response.status_code == 403
    assert response.json()["error"]["message"] == "This needs the “org:read” permission."
    # Whatever its creator may do, a key never manages keys.
    assert client.get(KEYS, **api_key_header(raw)).status_code == 403


@pytest.mark.parametrize(
    ("mangle", "code"),
    [
        (lambda raw: raw[:-1] + ("A" if raw[-1] != "A" else "B"), "api_key_invalid"),  # checksum
        (lambda raw: raw[:10], "api_key_invalid"),
        (lambda raw: "agp_" + "x" * 50, "api_key_invalid"),
    ],
)
def test_malformed_keys_are_refused(org, client_for, mangle, code):
    _, raw = api_key(org, ["org:read"])
    response = client_for(org).get(ORGANIZATION, **api_key_header(mangle(raw)))
    assert response.status_code == 401 and error_code(response) == code


def test_a_checksum_failure_is_refused_before_any_database_work(
    org, in_tenant, django_assert_num_queries
):
    _, raw = api_key(org, ["org:read"])
    typo = raw[:20] + ("x" if raw[20] != "x" else "y") + raw[21:]
    with in_tenant(org), django_assert_num_queries(0), pytest.raises(CredentialRefused):
        verify_api_key(typo, org.tenant)


def test_a_wrong_secret_with_a_valid_checksum_is_refused(org, client_for):
    from credentials import api_keys

    key, raw = api_key(org, ["org:read"])
    forged_body = api_keys.PREFIX + key.lookup_id + "A" * api_keys.SECRET_LENGTH
    forged = forged_body + api_keys.checksum(forged_body)
    response = client_for(org).get(ORGANIZATION, **api_key_header(forged))
    assert response.status_code == 401 and error_code(response) == "api_key_invalid"


def test_an_expired_key_is_refused(org, client_for, in_tenant):
    key, raw = api_key(org, ["org:read"], expires_at=timezone.now() + timedelta(days=1))
    with in_tenant(org):
        ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = client_for(org).get(ORGANIZATION, **api_key_header(raw))
    assert response.status_code == 401 and error_code(response) == "api_key_expired"


def test_a_key_never_exceeds_its_creators_current_role(org, in_tenant):
    from accounts.services import member_change_role, member_deactivate

    key, raw = api_key(org, ["org:read", "members:invite"])
    owner = Actor.for_user(org.owner)
    with in_tenant(org):
        assert verify_api_key(raw, org.tenant).permissions == {"org:read", "members:invite"}
        # The key is now cached in this process; the services' changes reach it at once.
        member_change_role(actor=owner, user_id=org.admin.pk, role="viewer")
        assert verify_api_key(raw, org.tenant).permissions == {"org:read"}
        member_deactivate(actor=owner, user_id=org.admin.pk)
        with pytest.raises(CredentialRefused):
            verify_api_key(raw, org.tenant)


def test_a_verified_key_is_cached_until_the_organizations_credentials_change(
    org, in_tenant, django_assert_num_queries
):
    from credentials.services import api_key_revoke
    from tenants import events

    key, raw = api_key(org, ["org:read"])
    tenant_id = str(org.tenant.public_id)
    with in_tenant(org):
        verify_api_key(raw, org.tenant)  # loads (and records today's use)
        with django_assert_num_queries(0):
            assert verify_api_key(raw, org.tenant).api_key.pk == key.pk
        epoch = events.credential_epoch(tenant_id)
        api_key_revoke(actor=Actor.for_user(org.owner), key_id=key.pk)
        # The epoch lives in Redis, shared by every process: theirs are stale now as well.
        assert events.credential_epoch(tenant_id) != epoch
        with pytest.raises(CredentialRefused) as refused:
            verify_api_key(raw, org.tenant)
    assert refused.value.error_code == "api_key_revoked"


def test_a_change_in_another_organization_keeps_this_ones_cache(
    org, other_org, in_tenant, django_assert_num_queries
):
    from tenants import events

    _, raw = api_key(org, ["org:read"])
    with in_tenant(org):
        verify_api_key(raw, org.tenant)
    events.bump_credential_epoch(str(other_org.tenant.public_id))
    with in_tenant(org), django_assert_num_queries(0):
        verify_api_key(raw, org.tenant)


def test_a_malformed_authorization_header_is_401(org, client_for):
    response = client_for(org).get(ORGANIZATION, HTTP_AUTHORIZATION="Api-Key")
    assert response.status_code == 401
    assert error_code(response) == "credentials_malformed"


def test_a_key_sent_to_the_public_host_is_not_an_api(org, public_client):
    _, raw = api_key(org, ["org:read"])
    response = public_client.get(ORGANIZATION, **api_key_header(raw))
    assert response.status_code == 404


def test_session_clients_need_the_csrf_token_to_write(org, in_tenant):
    client = Client(HTTP_HOST=org.host, enforce_csrf_checks=True)
    with in_tenant(org):
        client.force_login(org.admin)
    response = post_json(client, KEYS, {"name": "ci", "scopes": ["org:read"]})
    assert response.status_code == 403
    assert error_code(response) == "permission_denied"
    assert client.get(KEYS).status_code == 200


def test_password_guessing_over_the_api_raises_the_failed_logins_alert(org, client_for, in_tenant):
    from audit.models import Alert

    client = client_for(org)
    for _ in range(5):
        response = post_json(client, TOKEN, {"username": org.member.email, "password": "guess"})
        assert response.status_code == 401

    with in_tenant(org):
        alerts = list(Alert.objects.values_list("rule__code", "subject"))
    assert alerts == [("failed-logins", org.member.email)]
