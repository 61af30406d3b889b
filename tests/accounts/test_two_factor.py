"""Two-factor authentication: setup with a first code, sign-in's code step (a TOTP code or a
single-use recovery code), recovery codes renewed, turning it off, an admin's reset; each audited,
each ending the right sessions, each bound to one organization; the code step throttled and not
skippable; the owner's requirement; the API's password grant."""

from __future__ import annotations

import time

import pyotp
import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import override_settings
from django.utils import timezone

from accounts import services, two_factor
from accounts.models import RecoveryCode, TotpDevice, User
from audit.models import AuditEvent
from core.actors import Actor
from tenants import context
from tests.conftest import PASSWORD
from tests.credentials.helpers import api_key, api_key_header, error_code, post_json


def enrol(in_tenant, org, user) -> tuple[pyotp.TOTP, list[str]]:
    """Turn two-factor authentication on for `user` through the service; (their TOTP, codes)."""
    return enrol_in(in_tenant(org), user)


def enrol_in(schema, user) -> tuple[pyotp.TOTP, list[str]]:
    """`enrol` in the schema that the context manager `schema` enters (public: staff)."""
    secret = two_factor.new_secret()
    with schema:
        codes = services.two_factor_enable(
            actor=Actor.for_user(user),
            encrypted_secret=two_factor.encrypt_secret(secret, user_id=user.pk),
            code=pyotp.TOTP(secret).now(),
            keep_session_key="",
        )
    return pyotp.TOTP(secret), codes


def next_code(totp: pyotp.TOTP) -> str:
    """A code not used yet: the next 30-second step's (accepted for clock drift). The current
    one was spent by the setup, and a code works once."""
    return totp.at(time.time() + 30)


def actions(in_tenant, org, prefix: str) -> list[tuple[str, str, dict]]:
    with in_tenant(org):
        return list(
            AuditEvent.objects.filter(action__startswith=prefix)
            .order_by("sequence")
            .values_list("action", "result", "details")
        )


def password_step(client, user, **extra):
    return client.post("/login/", {"username": user.email, "password": PASSWORD, **extra})


# --- Mechanics ---------------------------------------------------------------------------------


def test_a_secret_decrypts_only_for_its_user_and_organization(org, other_org, in_tenant):
    with in_tenant(org):
        stored = two_factor.encrypt_secret("JBSWY3DPEHPK3PXP", user_id=7)
        assert two_factor.decrypt_secret(stored, user_id=7) == "JBSWY3DPEHPK3PXP"
        with pytest.raises(two_factor.SecretUnreadable):
            two_factor.decrypt_secret(stored, user_id=8)
    with in_tenant(other_org), pytest.raises(two_factor.SecretUnreadable):
        two_factor.decrypt_secret(stored, user_id=7)
    with pytest.raises(two_factor.SecretUnreadable):  # staff (the platform) are not org users
        two_factor.decrypt_secret(stored, user_id=7)


def test_a_code_matches_its_step_once_and_allows_one_step_of_drift():
    totp = pyotp.TOTP(two_factor.new_secret())
    now = totp.timecode(timezone.now())

    assert two_factor.matching_step(totp.secret, totp.now(), after_step=0) == now
    assert two_factor.matching_step(totp.secret, totp.now(), after_step=now) is None  # replay
    assert two_factor.matching_step(totp.secret, next_code(totp), after_step=now) == now + 1
    assert two_factor.matching_step(totp.secret, totp.at(time.time() + 90), after_step=0) is None
    assert two_factor.matching_step(totp.secret, "12345", after_step=0) is None


# --- Setup -------------------------------------------------------------------------------------


def test_the_setup_page_shows_a_qr_code_and_a_key_that_stays_the_same(org, client_for):
    client = client_for(org, org.member)

    first, again = client.get("/profile/two-factor/"), client.get("/profile/two-factor/")

    assert first.status_code == 200
    assert "<svg" in first.text and 'aria-label="QR code of the setup key"' in first.text
    assert first.context["setup_key_raw"] == again.context["setup_key_raw"]
    assert first["Cache-Control"].startswith("max-age=0")


def test_a_wrong_first_code_turns_nothing_on(org, client_for, in_tenant):
    client = client_for(org, org.member)
    client.get("/profile/two-factor/")

    response = client.post("/profile/two-factor/", {"code": "000000"})

    assert response.status_code == 400
    assert "That code does not match" in response.text
    with in_tenant(org):
        assert not User.objects.get(pk=org.member.pk).two_factor_enabled
        assert not TotpDevice.objects.filter(user_id=org.member.pk).exists()
    assert actions(in_tenant, org, "user.two_factor") == []


def test_setup_turns_it_on_shows_the_codes_once_and_ends_other_sessions(org, client_for, in_tenant):
    here, elsewhere = client_for(org, org.member), client_for(org, org.member)
    assert elsewhere.get("/").status_code == 200
    secret = here.get("/profile/two-factor/").context["setup_key_raw"]

    response = here.post("/profile/two-factor/", {"code": pyotp.TOTP(secret).now()})

    assert (response.status_code, response["Location"]) == (
        302,
        "/profile/two-factor/recovery-codes/",
    )
    codes_page = here.get("/profile/two-factor/recovery-codes/")
    codes = codes_page.context["codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    assert all(code in codes_page.text for code in codes)
    # Shown once: the next visit goes back to the profile, which says it is on.
    assert here.get("/profile/two-factor/recovery-codes/")["Location"] == "/profile/"
    assert 'data-two-factor="on"' in here.get("/profile/").text
    assert elsewhere.get("/").status_code == 302
    with in_tenant(org):
        assert User.objects.get(pk=org.member.pk).two_factor_enabled
        device = TotpDevice.objects.get(user_id=org.member.pk)
        assert secret not in device.encrypted_secret
        stored = set(
            RecoveryCode.objects.filter(user_id=org.member.pk).values_list("code_hash", flat=True)
        )
    assert stored == {two_factor.recovery_code_hash(code) for code in codes}
    assert not stored & set(codes)
    assert actions(in_tenant, org, "user.two_factor") == [
        ("user.two_factor_enabled", "success", {"method": "totp", "signed_out": 1})
    ]


@pytest.mark.parametrize("role", [None, "viewer", "member", "admin", "owner"])
def test_the_setup_page_by_role(org, client_for, role):
    response = client_for(org, org.user(role) if role else None).get("/profile/two-factor/")
    if role is None:
        assert response.status_code == 302 and response["Location"].startswith("/login/")
    else:
        assert response.status_code == 200


def test_an_api_key_cannot_turn_it_on(org, in_tenant):
    key_actor = Actor(kind="api_key", id="1", label="key", permissions=frozenset({"org:read"}))
    with in_tenant(org), pytest.raises(PermissionDenied):
        services.two_factor_enable(
            actor=key_actor, encrypted_secret="x", code="123456", keep_session_key=""
        )


# --- Signing in --------------------------------------------------------------------------------


def test_the_password_alone_signs_in_nobody_and_opens_no_page_or_api(org, client_for, in_tenant):
    enrol(in_tenant, org, org.member)
    client = client_for(org)

    response = password_step(client, org.member, next="/agents/")

    assert (response.status_code, response["Location"]) == (302, "/login/code/")
    assert "_auth_user_id" not in client.session
    for path in ("/", "/agents/", "/profile/", "/members/", "/api-keys/", "/profile/two-factor/"):
        assert client.get(path)["Location"].startswith("/login/"), path
    api = client.get("/api/v1/agents/")
    assert api.status_code == 401 and error_code(api) == "not_authenticated"
    assert actions(in_tenant, org, "auth.login") == []


def test_the_code_signs_in_to_the_page_asked_for_and_works_once(org, client_for, in_tenant):
    totp, _ = enrol(in_tenant, org, org.member)
    client = client_for(org)
    password_step(client, org.member, next="/agents/")
    page = client.get("/login/code/")
    assert page.status_code == 200 and org.member.email in page.text

    code = next_code(totp)
    response = client.post("/login/code/", {"code": code})

    assert (response.status_code, response["Location"]) == (302, "/agents/")
    assert client.get("/agents/").status_code == 200
    assert actions(in_tenant, org, "auth.login") == [
        ("auth.login", "success", {"method": "password+totp"})
    ]
    # The same code, in another sign-in: refused (a code works once).
    again = client_for(org)
    password_step(again, org.member)
    assert again.post("/login/code/", {"code": code}).status_code == 400
    assert "_auth_user_id" not in again.session


def test_a_recovery_code_signs_in_once(org, client_for, in_tenant):
    _, codes = enrol(in_tenant, org, org.member)
    client = client_for(org)
    password_step(client, org.member)

    response = client.post("/login/code/", {"code": codes[3].upper().replace("-", " ")})

    assert (response.status_code, response["Location"]) == (302, "/")
    assert "You signed in with a recovery code: 9 left." in client.get("/").text
    assert actions(in_tenant, org, "user.two_factor_recovery") == [
        ("user.two_factor_recovery_code_used", "success", {"remaining": 9})
    ]
    second = client_for(org)
    password_step(second, org.member)
    assert second.post("/login/code/", {"code": codes[3]}).status_code == 400


def test_wrong_codes_are_recorded_and_five_end_the_attempt(org, client_for, in_tenant):
    enrol(in_tenant, org, org.member)
    client = client_for(org)
    password_step(client, org.member)

    for _ in range(4):
        assert client.post("/login/code/", {"code": "000000"}).status_code == 400
    fifth = client.post("/login/code/", {"code": "000000"})

    assert (fifth.status_code, fifth["Location"]) == (302, "/login/")
    assert client.get("/login/code/")["Location"] == "/login/"
    with in_tenant(org):
        failures = AuditEvent.objects.filter(action="auth.login", result="failed")
        assert {event.details["method"] for event in failures} == {"two_factor"}


def test_the_code_step_is_throttled_per_account(org, client_for, in_tenant):
    totp, _ = enrol(in_tenant, org, org.member)
    for _ in range(2):  # two sign-ins, five wrong codes each: ten tries on this account
        client = client_for(org)
        password_step(client, org.member)
        for _ in range(5):
            client.post("/login/code/", {"code": "000000"})
    client = client_for(org)
    password_step(client, org.member)

    refused = client.post("/login/code/", {"code": next_code(totp)})

    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
    assert "_auth_user_id" not in client.session


def test_the_code_step_expires(org, client_for, in_tenant):
    totp, _ = enrol(in_tenant, org, org.member)
    client = client_for(org)
    password_step(client, org.member)

    with override_settings(TWO_FACTOR_PENDING_SECONDS=-1):
        response = client.post("/login/code/", {"code": next_code(totp)})

    assert (response.status_code, response["Location"]) == (302, "/login/")
    assert "_auth_user_id" not in client.session


def test_a_password_changed_meanwhile_ends_the_code_step(org, client_for, in_tenant):
    totp, _ = enrol(in_tenant, org, org.member)
    client = client_for(org)
    password_step(client, org.member)
    with in_tenant(org):
        user = User.objects.get(pk=org.member.pk)
        user.set_password("another-long-passphrase-1")
        user.save()

    response = client.post("/login/code/", {"code": next_code(totp)})

    assert response["Location"] == "/login/"


def test_the_code_step_and_codes_mean_nothing_on_another_organizations_host(
    org, other_org, client_for, in_tenant
):
    """The same person in two organizations has two accounts, each with its own authenticator:
    one organization's code, recovery code or half-signed-in session opens nothing in the other."""
    totp, codes = enrol(in_tenant, org, org.member)
    with in_tenant(other_org):
        twin = services.user_create(
            actor=Actor.system("tests"), email=org.member.email, password=PASSWORD, role="member"
        )
    twin_totp, _ = enrol(in_tenant, other_org, twin)
    client = client_for(org)
    password_step(client, org.member)

    # The half-signed-in session of A, presented on B's host: nothing waits for a code there.
    elsewhere = client_for(other_org)
    elsewhere.cookies = client.cookies
    assert elsewhere.get("/login/code/")["Location"] == "/login/"
    # Signed in with the password on B, A's codes are refused; B's own code works.
    on_b = client_for(other_org)
    password_step(on_b, twin)
    assert on_b.post("/login/code/", {"code": next_code(totp)}).status_code == 400
    assert on_b.post("/login/code/", {"code": codes[0]}).status_code == 400
    assert "_auth_user_id" not in on_b.session
    assert on_b.post("/login/code/", {"code": next_code(twin_totp)}).status_code == 302
    # A's recovery code still works on A: B spent nothing of A's.
    with in_tenant(org):
        assert (
            RecoveryCode.objects.filter(user_id=org.member.pk, used_at__isnull=True).count() == 10
        )


def test_an_account_without_two_factor_signs_in_with_its_password(org, client_for):
    client = client_for(org)
    response = password_step(client, org.viewer)
    assert (response.status_code, response["Location"]) == (302, "/")
    assert "_auth_user_id" in client.session


def test_the_api_password_grant_is_refused_to_an_account_with_two_factor(
    org, client_for, in_tenant
):
    enrol(in_tenant, org, org.member)
    client = client_for(org)

    refused = post_json(
        client, "/api/v1/auth/token", {"username": org.member.email, "password": PASSWORD}
    )
    allowed = post_json(
        client, "/api/v1/auth/token", {"username": org.viewer.email, "password": PASSWORD}
    )

    assert refused.status_code == 401 and error_code(refused) == "two_factor_required"
    assert allowed.status_code == 200


def test_a_refresh_token_from_before_the_setup_stops_working(org, client_for, in_tenant):
    client = client_for(org)
    pair = post_json(
        client, "/api/v1/auth/token", {"username": org.member.email, "password": PASSWORD}
    ).json()
    enrol(in_tenant, org, org.member)

    refused = post_json(client, "/api/v1/auth/token/refresh", {"refresh": pair["refresh"]})

    assert refused.status_code == 401 and error_code(refused) == "two_factor_required"


# --- Recovery codes renewed, turning it off, an admin's reset ----------------------------------


def test_new_recovery_codes_replace_the_old_ones(org, client_for, in_tenant):
    _, old = enrol(in_tenant, org, org.member)
    client = client_for(org, org.member)

    refused = client.post("/profile/two-factor/recovery-codes/new/", {"regenerate-proof": "nope"})
    response = client.post(
        "/profile/two-factor/recovery-codes/new/", {"regenerate-proof": PASSWORD}
    )

    assert refused["Location"] == "/profile/"
    assert response["Location"] == "/profile/two-factor/recovery-codes/"
    new = client.get("/profile/two-factor/recovery-codes/").context["codes"]
    assert not set(new) & set(old)
    with in_tenant(org):
        user = User.objects.get(pk=org.member.pk)
        with pytest.raises(ValidationError):
            services.two_factor_code_check(actor=Actor.for_user(user), user_id=user.pk, code=old[0])
        method = services.two_factor_code_check(
            actor=Actor.for_user(user), user_id=user.pk, code=new[0]
        )
    assert method == "recovery_code"
    assert [row[0] for row in actions(in_tenant, org, "user.two_factor_recovery_codes")] == [
        "user.two_factor_recovery_codes_regenerated"
    ]


@pytest.mark.parametrize("proof", ["password", "code", "recovery_code"])
def test_turning_it_off_needs_a_proof_and_ends_other_sessions(org, client_for, in_tenant, proof):
    totp, codes = enrol(in_tenant, org, org.member)
    here, elsewhere = client_for(org, org.member), client_for(org, org.member)
    assert elsewhere.get("/").status_code == 200

    wrong = here.post("/profile/two-factor/disable/", {"disable-proof": "000000"})
    with in_tenant(org):
        assert User.objects.get(pk=org.member.pk).two_factor_enabled
    value = {"password": PASSWORD, "code": next_code(totp), "recovery_code": codes[0]}[proof]
    response = here.post("/profile/two-factor/disable/", {"disable-proof": value})

    assert wrong["Location"] == response["Location"] == "/profile/"
    assert here.get("/profile/").status_code == 200
    assert elsewhere.get("/").status_code == 302
    with in_tenant(org):
        assert not User.objects.get(pk=org.member.pk).two_factor_enabled
        assert not TotpDevice.objects.filter(user_id=org.member.pk).exists()
        assert not RecoveryCode.objects.filter(user_id=org.member.pk).exists()
    assert actions(in_tenant, org, "user.two_factor_disabled") == [
        ("user.two_factor_disabled", "success", {"signed_out": 1})
    ]


@pytest.mark.parametrize(
    ("actor_role", "target_role", "status"),
    [
        ("viewer", "member", 403),
        ("member", "viewer", 403),
        ("admin", "member", 302),
        ("admin", "owner", 302),  # refused, said on the members page
        ("owner", "admin", 302),
    ],
)
def test_an_admin_resets_a_members_two_factor(
    org, client_for, in_tenant, actor_role, target_role, status
):
    allowed = (actor_role, target_role) in {("admin", "member"), ("owner", "admin")}
    target = org.user(target_role)
    enrol(in_tenant, org, target)
    target_session = client_for(org, target)

    response = client_for(org, org.user(actor_role)).post(f"/members/{target.pk}/two-factor/reset/")

    with in_tenant(org):
        enabled = User.objects.get(pk=target.pk).two_factor_enabled
    events = actions(in_tenant, org, "member.two_factor_reset")
    if allowed:
        assert response["Location"] == "/members/"
        assert not enabled
        assert target_session.get("/").status_code == 302
        assert events == [
            (
                "member.two_factor_reset",
                "success",
                {"email": target.email, "signed_out": 1},
            )
        ]
    else:
        assert response.status_code == status
        assert enabled
        assert target_session.get("/").status_code == 200
        assert [event[1] for event in events] == ["denied"]


def test_another_organizations_admin_cannot_reset_anyone(org, other_org, client_for, in_tenant):
    enrol(in_tenant, org, org.member)
    attacker = client_for(other_org, other_org.admin)

    unknown = attacker.post("/members/999999/two-factor/reset/")
    # The same id on the other host is another person (without two-factor): nothing to reset.
    same_id = attacker.post(f"/members/{org.member.pk}/two-factor/reset/")

    assert unknown.status_code == 404
    assert same_id["Location"] == "/members/"
    with in_tenant(org):
        assert User.objects.get(pk=org.member.pk).two_factor_enabled
    assert actions(in_tenant, org, "member.two_factor_reset") == []
    assert actions(in_tenant, other_org, "member.two_factor_reset") == []


def test_a_reactivated_member_starts_without_the_old_authenticator(org, in_tenant):
    enrol(in_tenant, org, org.member)
    system = Actor.system("tests")
    with in_tenant(org):
        services.member_deactivate(actor=Actor.for_user(org.owner), user_id=org.member.pk)
        _, token = services.invitation_create(
            actor=Actor.for_user(org.owner), email=org.member.email, role="member"
        )
        user = services.invitation_accept(actor=system, token=token, password=PASSWORD)
        assert not user.two_factor_enabled
        assert not TotpDevice.objects.filter(user=user).exists()


# --- The owner's requirement -------------------------------------------------------------------

REQUIRE = "/members/require-two-factor/"


@pytest.mark.parametrize("role", ["viewer", "member", "admin"])
def test_only_the_owner_requires_two_factor(org, client_for, in_tenant, role):
    enrol(in_tenant, org, org.user(role))

    response = client_for(org, org.user(role)).post(REQUIRE, {"required": "1"})

    assert response.status_code == 403
    with context.public_context():
        assert not type(org.tenant).objects.get(pk=org.tenant.pk).require_two_factor
    assert actions(in_tenant, org, "organization.two_factor") == []


def test_the_owner_must_have_two_factor_first(org, client_for, in_tenant):
    response = client_for(org, org.owner).post(REQUIRE, {"required": "1"})

    assert response["Location"] == "/members/"
    with context.public_context():
        assert not type(org.tenant).objects.get(pk=org.tenant.pk).require_two_factor
    assert actions(in_tenant, org, "organization.two_factor") == []


def test_required_two_factor_sends_members_to_set_it_up_and_spares_integrations(
    org, client_for, in_tenant
):
    enrol(in_tenant, org, org.owner)
    owner = client_for(org, org.owner)
    member = client_for(org, org.member)
    _, raw_key = api_key(org, ["agents:read"])

    response = owner.post(REQUIRE, {"required": "1"})

    assert response["Location"] == "/members/"
    with context.public_context():
        assert type(org.tenant).objects.get(pk=org.tenant.pk).require_two_factor
    assert actions(in_tenant, org, "organization.two_factor") == [
        (
            "organization.two_factor_requirement_changed",
            "success",
            {"required": True, "members_without": 3},
        )
    ]
    # The member, signed in already, can do nothing but set it up (or sign out).
    for path in ("/", "/agents/", "/profile/", "/members/"):
        assert member.get(path)["Location"] == "/profile/two-factor/", path
    assert member.get("/profile/two-factor/").status_code == 200
    api = member.get("/api/v1/agents/")
    assert api.status_code == 403 and error_code(api) == "two_factor_required"
    # Nor does another Authorization scheme make the session count.
    basic = member.get("/api/v1/agents/", HTTP_AUTHORIZATION="Basic bWVtYmVyOng=")
    assert basic.status_code == 401
    # Integrations are not concerned; nor is the owner, who has it.
    key_client = client_for(org)
    assert key_client.get("/api/v1/agents/", **api_key_header(raw_key)).status_code == 200
    assert owner.get("/agents/").status_code == 200
    # Set up, the member is free again.
    secret = member.get("/profile/two-factor/").context["setup_key_raw"]
    member.post("/profile/two-factor/", {"code": pyotp.TOTP(secret).now()})
    assert member.get("/agents/").status_code == 200

    owner.post(REQUIRE, {"required": "0"})
    with context.public_context():
        assert not type(org.tenant).objects.get(pk=org.tenant.pk).require_two_factor


def test_the_requirement_of_one_organization_binds_no_other(org, other_org, client_for, in_tenant):
    enrol(in_tenant, org, org.owner)
    client_for(org, org.owner).post(REQUIRE, {"required": "1"})

    assert client_for(other_org, other_org.member).get("/agents/").status_code == 200
    assert client_for(org, org.member).get("/agents/")["Location"] == "/profile/two-factor/"


# --- Staff on Django admin ---------------------------------------------------------------------


def staff_enrol(staff_user) -> tuple[pyotp.TOTP, list[str]]:
    return enrol_in(context.public_context(), staff_user)


def test_staff_sign_in_to_admin_with_a_code(public_client, staff_user):
    totp, codes = staff_enrol(staff_user)

    response = public_client.post(
        "/admin/login/?next=/admin/",
        {"username": staff_user.email, "password": PASSWORD, "next": "/admin/"},
    )

    assert (response.status_code, response["Location"]) == (302, "/admin/login/code/")
    assert "_auth_user_id" not in public_client.session
    assert public_client.get("/admin/")["Location"].startswith("/admin/login/")
    assert public_client.post("/admin/login/code/", {"code": "000000"}).status_code == 400
    signed_in = public_client.post("/admin/login/code/", {"code": codes[0]})
    assert (signed_in.status_code, signed_in["Location"]) == (302, "/admin/")
    assert public_client.get("/admin/").status_code == 200
    with context.public_context():
        assert AuditEvent.objects.filter(
            action="auth.login", result="success", details__method="password+recovery_code"
        ).exists()


def test_staff_without_two_factor_sign_in_with_their_password(public_client, staff_user):
    response = public_client.post(
        "/admin/login/", {"username": staff_user.email, "password": PASSWORD, "next": "/admin/"}
    )
    assert (response.status_code, response["Location"]) == (302, "/admin/")


def test_staff_set_it_up_in_admin(public_client, staff_user):
    public_client.force_login(staff_user)
    assert "data-admin-two-factor" in public_client.get("/admin/").text
    assert 'data-two-factor="off"' in public_client.get("/admin/two-factor/").text
    secret = public_client.get("/admin/two-factor/setup/").context["setup_key_raw"]

    response = public_client.post("/admin/two-factor/setup/", {"code": pyotp.TOTP(secret).now()})

    assert response["Location"] == "/admin/two-factor/recovery-codes/"
    assert len(public_client.get("/admin/two-factor/recovery-codes/").context["codes"]) == 10
    assert 'data-two-factor="on"' in public_client.get("/admin/two-factor/").text
    public_client.post("/admin/two-factor/disable/", {"disable-proof": PASSWORD})
    assert 'data-two-factor="off"' in public_client.get("/admin/two-factor/").text


def test_staff_must_set_it_up_when_the_platform_requires_it(public_client, staff_user):
    public_client.force_login(staff_user)
    with override_settings(STAFF_REQUIRE_TWO_FACTOR=True):
        assert public_client.get("/admin/")["Location"] == "/admin/two-factor/setup/"
        assert public_client.get("/admin/tenants/tenant/")["Location"] == "/admin/two-factor/setup/"
        assert public_client.get("/admin/two-factor/setup/").status_code == 200
        staff_enrol(staff_user)
        public_client.force_login(User.objects.get(pk=staff_user.pk))
        assert public_client.get("/admin/").status_code == 200


def test_the_staff_code_step_is_throttled(public_client, staff_user):
    staff_enrol(staff_user)
    for _ in range(2):
        public_client.post("/admin/login/", {"username": staff_user.email, "password": PASSWORD})
        for _ in range(5):
            public_client.post("/admin/login/code/", {"code": "000000"})
    public_client.post("/admin/login/", {"username": staff_user.email, "password": PASSWORD})

    assert public_client.post("/admin/login/code/", {"code": "000000"}).status_code == 429


def test_a_lost_staff_authenticator_is_reset_by_command(staff_user):
    from io import StringIO

    from django.core.management import call_command

    staff_enrol(staff_user)
    out = StringIO()

    call_command("staff_two_factor_reset", "--email", staff_user.email, stdout=out)

    assert "two-factor authentication is off for staff@platform.test" in out.getvalue()
    with context.public_context():
        assert not User.objects.get(pk=staff_user.pk).two_factor_enabled
        assert AuditEvent.objects.filter(action="staff.two_factor_reset").count() == 1
