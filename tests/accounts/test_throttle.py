"""Sign-in, signup and password reset are throttled per organization, and fail closed."""

from django.test import override_settings

from tests.conftest import PASSWORD

DEAD_REDIS = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
    }
}


def attempt(client, email: str, password: str = "wrong-password"):
    return client.post("/login/", {"username": email, "password": password})


def test_an_account_is_throttled_after_ten_attempts(org, client_for):
    client = client_for(org)
    for _ in range(10):
        assert attempt(client, org.member.email).status_code == 200  # form with an error

    refused = attempt(client, org.member.email, PASSWORD)

    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 300
    assert "_auth_user_id" not in client.session
    # Another account of the same organization is not affected.
    assert attempt(client, org.viewer.email, PASSWORD).status_code == 302


def test_throttles_are_per_organization(org, other_org, client_for):
    acme = client_for(org)
    for _ in range(30):
        attempt(acme, f"nobody{_}@acme.test")
    assert attempt(acme, org.owner.email, PASSWORD).status_code == 429

    # The same address (same IP) on another organization's host is counted separately.
    assert attempt(client_for(other_org), other_org.owner.email, PASSWORD).status_code == 302


def test_sign_in_fails_closed_when_the_counters_are_unreachable(org, client_for):
    with override_settings(CACHES=DEAD_REDIS):
        refused = attempt(client_for(org), org.owner.email, PASSWORD)

    assert refused.status_code == 429
    assert b"briefly unavailable" in refused.content


def test_signup_is_throttled_per_address(public_client, db):
    for _ in range(10):
        public_client.post("/signup/", {"name": "", "slug": "x"})

    refused = public_client.post("/signup/", {"name": "", "slug": "x"})

    assert refused.status_code == 429


def test_password_reset_is_throttled(org, client_for):
    client = client_for(org)
    for _ in range(10):
        client.post("/password-reset/", {"email": org.member.email})

    assert client.post("/password-reset/", {"email": org.member.email}).status_code == 429


def test_the_staff_admin_sign_in_is_throttled(public_client, staff_user):
    for _ in range(10):
        public_client.post("/admin/login/", {"username": staff_user.email, "password": "wrong"})

    refused = public_client.post(
        "/admin/login/", {"username": staff_user.email, "password": PASSWORD}
    )

    assert refused.status_code == 429
    assert "_auth_user_id" not in public_client.session
