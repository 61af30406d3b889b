"""Staff's temporary overrides of every limit a plan has: the rate limits per resource (`api`,
`auth`, `tasks`, `publish`, `export`, `usage_events`) and the monthly quota on any meter. They
raise or lower a limit at once (the caches are dropped in every process), expire by themselves,
are refused with a bad expiry or no reason, are in both audit logs, are shown on the Billing and
Usage pages, and never touch another organization."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from audit.models import AuditEvent
from billing import limits, services
from billing.models import LimitOverride, PlanLimit
from core.actors import Actor
from tenants import context
from tests.audit.test_api import EXPORT
from tests.audit.test_api import bearer as audit_bearer
from tests.billing.helpers import clear_usage, record_usage
from tests.conftest import PASSWORD
from tests.credentials.helpers import error_code, post_json

STAFF = Actor.system("staff")
TOKEN = "/api/v1/auth/token"


@pytest.fixture(autouse=True)
def _fresh():
    from gateway import services as gateway

    limits.forget()
    gateway._limits_cache.clear()
    yield
    limits.forget()
    gateway._limits_cache.clear()


def override(org, *, hours: float = 1, **target):
    return services.limit_override_create(
        actor=STAFF,
        tenant=org.tenant,
        expires_at=timezone.now() + timedelta(hours=hours),
        reason="ticket 7: a customer's launch",
        **target,
    )


def tokens(client, event_id: str, amount: int):
    event = {
        "specversion": "1.0",
        "id": event_id,
        "source": "rt",
        "type": "llm.tokens",
        "data": {"model": "m", "input_tokens": amount, "output_tokens": 0},
    }
    return client.post(
        "/api/v1/usage/events", data=json.dumps(event), content_type="application/cloudevents+json"
    )


def task(client):
    return client.post("/api/v1/tasks/", {"task": {}}, content_type="application/json")


# Rate limits -------------------------------------------------------------------------------------


def test_an_override_raises_the_tasks_limit_and_another_lowers_it(org, other_org, client_for):
    client = client_for(org, org.admin)
    override(org, resource="tasks", limit=2, window_seconds=60)
    lowered = [task(client).status_code for _ in range(3)]
    override(org, resource="tasks", limit=5, window_seconds=60)  # the later one wins
    raised = [task(client).status_code for _ in range(4)]
    theirs = [task(client_for(other_org, other_org.admin)).status_code for _ in range(3)]

    assert lowered == [202, 202, 429]
    assert raised == [202, 202, 202, 429]  # 5 in the window: 2 before, 3 now
    assert theirs == [202] * 3  # another organization keeps its plan's limit


def test_an_auth_override_changes_every_sign_in_window_of_one_organization(
    org, other_org, client_for, settings
):
    settings.API_TOKEN_RATE_PER_IP = "100/m"
    settings.API_TOKEN_RATE_PER_ACCOUNT = "100/m"
    override(org, resource="auth", limit=2, window_seconds=60)
    address = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.9"

    def sign_in(o):
        body = {"username": o.member.email, "password": PASSWORD}
        return post_json(client_for(o), TOKEN, body, REMOTE_ADDR=address)

    ours = [sign_in(org) for _ in range(3)]
    theirs = [sign_in(other_org) for _ in range(3)]

    assert [r.status_code for r in ours] == [200, 200, 429]
    assert error_code(ours[-1]) == "rate_limited"
    assert ours[-1]["RateLimit-Policy"].endswith(";q=2;w=60")
    assert [r.status_code for r in theirs] == [200] * 3


def test_an_export_override_raises_the_exports_an_actor_may_make(org, client_for, settings):
    from django.core.cache import cache

    cache.clear()
    settings.AUDIT_EXPORT_RATE = "1/m"
    client, headers = client_for(org), audit_bearer(org, org.admin)
    assert client.get(EXPORT, {"format": "csv"}, **headers).status_code == 200
    assert client.get(EXPORT, {"format": "csv"}, **headers).status_code == 429

    override(org, resource="export", limit=3, window_seconds=60)

    assert [client.get(EXPORT, {"format": "csv"}, **headers).status_code for _ in range(3)] == [
        200,
        200,
        429,
    ]


def test_an_override_expires_by_itself_without_a_cache_drop(org, client_for):
    client = client_for(org, org.member)
    services.limit_override_create(
        actor=STAFF,
        tenant=org.tenant,
        resource="api",
        limit=1,
        window_seconds=3600,
        expires_at=timezone.now() + timedelta(seconds=2),
        reason="a short test",
    )
    during = [client.get("/api/v1/agents/").status_code for _ in range(2)]
    time.sleep(2.1)
    after = [client.get("/api/v1/agents/").status_code for _ in range(2)]

    assert during == [200, 429]
    assert after == [200, 200]  # the plan's 60 a minute again, from the cached rows


def test_a_change_drops_the_limits_in_every_process_after_commit(
    org, monkeypatch, django_capture_on_commit_callbacks
):
    from tenants import invalidation

    published = []
    monkeypatch.setattr(invalidation, "_redis", lambda: _Recorder(published))
    monkeypatch.setattr(invalidation.settings, "REDIS_URL", "redis://recorded")
    limits.limit_for(org.tenant, "api")  # cached

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        override(org, resource="api", limit=3, window_seconds=60)
        assert limits.limit_for(org.tenant, "api").limit == 3  # this process: at once
        assert published == []  # others: not before the commit
    for callback in callbacks:
        callback()

    assert published == [(invalidation.channel(), limits.INVALIDATION_TOPIC)]
    assert invalidation._callbacks[limits.INVALIDATION_TOPIC] is limits.forget


class _Recorder:
    def __init__(self, published):
        self.published = published

    def publish(self, channel, topic):
        self.published.append((channel, topic))


# Monthly quotas ----------------------------------------------------------------------------------


def test_a_quota_override_lowers_a_hard_quota_and_names_it(org, other_org, client_for):
    override(org, meter="llm_tokens", limit=100)
    refused = tokens(client_for(org, org.member), "a", 101)
    allowed = tokens(client_for(org, org.member), "b", 100)
    theirs = tokens(client_for(other_org, other_org.member), "c", 101)

    assert refused.status_code == 429 and error_code(refused) == "quota_exceeded"
    assert refused.json()["error"]["detail"]["quota"] == {
        "name": "llm_tokens_per_month",
        "meter": "llm_tokens",
        "limit": 100,
    }
    assert allowed.status_code == theirs.status_code == 202


def test_a_quota_override_raises_the_monthly_messages(org, client_for):
    with context.tenant_context(org.tenant):
        from agents.selectors import limits_get

        quota = limits_get().messages_per_month
    record_usage(org.tenant, "gateway_messages", quota)
    client = client_for(org, org.admin)
    try:
        before = task(client)
        override(org, meter="gateway_messages", limit=quota + 2)
        after = [task(client).status_code for _ in range(3)]
        summary = {m["meter"]: m for m in client.get("/api/v1/usage/").json()["meters"]}
    finally:
        clear_usage(org.tenant)

    assert before.status_code == 429 and error_code(before) == "quota_exceeded"
    assert after == [202, 202, 429]
    assert summary["gateway_messages"]["quota"] == quota + 2


def test_a_quota_override_on_a_meter_without_one_is_hard(org, client_for):
    override(org, meter="api_requests", limit=2)
    client = client_for(org, org.member)
    statuses = [client.get("/api/v1/agents/").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


# Bad input, permissions, audit ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"reason": "  "}, "reason"),
        ({"reason": "x" * 501}, "reason"),
        ({"expires_at": "past"}, "expires_at"),
        ({"expires_at": "far"}, "expires_at"),
        ({"expires_at": None}, "expires_at"),
        ({"resource": "api", "meter": "llm_tokens"}, "resource"),
        ({"resource": "", "meter": ""}, "resource"),
        ({"resource": "", "meter": "nothing_here"}, "meter"),
        ({"resource": "everything"}, "resource"),
        ({"limit": -1}, "limit"),
        ({"limit": True}, "limit"),
        ({"limit": 10**9 + 1}, "limit"),
        ({"resource": "", "meter": "llm_tokens", "limit": 10**15 + 1}, "limit"),
        ({"window_seconds": 86401}, "window_seconds"),
    ],
)
def test_bad_overrides_are_refused_and_change_nothing(org, change, field):
    values = {
        "resource": "tasks",
        "limit": 5,
        "window_seconds": 60,
        "expires_at": timezone.now() + timedelta(hours=1),
        "reason": "why",
        **change,
    }
    if values["expires_at"] == "past":
        values["expires_at"] = timezone.now() - timedelta(minutes=1)
    if values["expires_at"] == "far":
        values["expires_at"] = timezone.now() + timedelta(days=91)
    with pytest.raises(ValidationError) as refused:
        services.limit_override_create(actor=STAFF, tenant=org.tenant, **values)
    assert field in refused.value.message_dict
    with context.public_context():
        assert not LimitOverride.objects.exists()
        assert not AuditEvent.objects.filter(action="limit_override.created").exists()


def test_another_organizations_meter_is_not_one_to_override(org, other_org, in_tenant):
    with in_tenant(other_org):
        services.meter_create(
            actor=Actor.for_user(other_org.admin),
            slug="images",
            name="Images",
            event_type="com.example.images",
            aggregation="COUNT",
        )
    with pytest.raises(ValidationError) as refused:
        override(org, meter="images", limit=5)
    assert "meter" in refused.value.message_dict
    override(other_org, meter="images", limit=5)  # its own: fine


def test_a_quota_override_is_in_both_logs_with_what_it_replaces(org, other_org, in_tenant):
    plan = limits.plan_quotas(org.tenant)["tool_runs"].limit  # the plan's soft quota
    override(org, meter="tool_runs", limit=5000)

    with context.public_context():
        (platform,) = AuditEvent.objects.filter(action="limit_override.created")
    with in_tenant(org):
        (own,) = AuditEvent.objects.filter(action="limit_override.created")
    with in_tenant(other_org):
        assert not AuditEvent.objects.filter(action="limit_override.created").exists()
    assert platform.details == own.details
    assert own.details["meter"] == "tool_runs" and own.details["limit"] == 5000
    assert own.details["replaces"] == f"{plan} a month"
    assert own.details["reason"] == "ticket 7: a customer's launch"
    assert "window_seconds" not in own.details


def test_organization_users_cannot_override_quotas(org):
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        services.limit_override_create(
            actor=Actor.for_user(org.owner),
            tenant=org.tenant,
            meter="llm_tokens",
            limit=10**12,
            expires_at=timezone.now() + timedelta(hours=1),
            reason="more please",
        )


def test_a_plan_limit_on_a_settings_resource_is_refused(org):
    with pytest.raises(ValidationError) as refused:
        services.plan_limit_save(
            actor=STAFF,
            plan_limit=PlanLimit(plan_id=org.tenant.plan_id, resource="auth", limit=5),
            fields=["limit"],
        )
    assert "resource" in refused.value.message_dict


# Admin and pages ---------------------------------------------------------------------------------


@pytest.fixture
def staff_client(public_client, staff_user):
    with context.public_context():
        public_client.force_login(staff_user)
    return public_client


def _expiry(hours: int = 2) -> dict[str, str]:
    moment = timezone.localtime(timezone.now() + timedelta(hours=hours))
    return {
        "expires_at_0": moment.strftime("%Y-%m-%d"),
        "expires_at_1": moment.strftime("%H:%M:%S"),
    }


def test_staff_add_a_quota_override_in_the_admin_and_a_bad_one_is_a_form_error(staff_client, org):
    form = {"tenant": org.tenant.pk, "limit": 77, "window_seconds": 60, "reason": "launch"}
    good = staff_client.post(
        "/admin/billing/limitoverride/add/", {**form, "meter": "llm_tokens", **_expiry()}
    )
    bad = staff_client.post(
        "/admin/billing/limitoverride/add/", {**form, "meter": "no_such_meter", **_expiry()}
    )
    neither = staff_client.post("/admin/billing/limitoverride/add/", {**form, **_expiry()})

    assert good.status_code == 302, good.content
    assert bad.status_code == neither.status_code == 200
    assert "Not a built-in meter" in bad.content.decode()
    assert "one of them" in neither.content.decode()
    with context.public_context():
        assert list(LimitOverride.objects.values_list("meter", "limit")) == [("llm_tokens", 77)]
    assert limits.monthly_quotas(org.tenant)["llm_tokens"].limit == 77


def test_the_billing_and_usage_pages_show_overrides_with_their_expiry(org, other_org, client_for):
    made = override(org, resource="tasks", limit=1234, window_seconds=60)
    override(org, meter="llm_tokens", limit=4321)

    billing = client_for(org, org.owner).get("/billing/")
    usage = client_for(org, org.admin).get("/usage/")
    theirs = client_for(other_org, other_org.owner).get("/billing/")
    their_usage = client_for(other_org, other_org.admin).get("/usage/")

    expiry = made.expires_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    for page in (billing, usage):
        assert page.status_code == 200
        html = page.content.decode()
        assert "Temporary limits" in html
        assert "1,234 a minute" in html and "4,321 a month" in html
        assert expiry in html
        assert "ticket 7" in html
    assert "Temporary until" in usage.content.decode()  # beside the quota it replaces
    for page in (theirs, their_usage):
        assert page.status_code == 200
        assert "Temporary limits" not in page.content.decode()
