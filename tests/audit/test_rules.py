"""Compliance alert rules fire, and stay quiet, on a table of event sequences."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts import services as account_services
from audit import exports, services
from audit.models import Alert, AlertRule
from audit.selectors import EventFilters
from core.actors import Actor
from core.roles import delegable_scopes

SYSTEM = Actor.system("tests")
EVERY_SCOPE = sorted(delegable_scopes())


def failed_login(email: str, at: float) -> tuple:
    return (at, "auth.login", "failed", "login", email, {"method": "password"})


def login(email: str, at: float) -> tuple:
    return (at, "auth.login", "success", "login", email, {"method": "password"})


def key_created(scopes: list[str], result: str = "success") -> tuple:
    return (0, "api_key.created", result, "api_key", "k1", {"name": "ci", "scopes": scopes})


def role_changed(to: str, result: str = "success") -> tuple:
    return (
        0,
        "member.role_changed",
        result,
        "user",
        "5",
        {"email": "m@x.test", "from": "member", "to": to},
    )


def exported(filters: dict, result: str = "success") -> tuple:
    return (
        0,
        "audit.exported",
        result,
        "audit_log",
        "",
        {"format": "csv", "filters": filters, "whole_log": not filters},
    )


A, B = "alice@acme.test", "bob@acme.test"

SCENARIOS = {
    # Repeated failed logins: 5 for one account within 5 minutes.
    "five failures in a minute": ([failed_login(A, t * 10) for t in range(5)], ["failed-logins"]),
    "four failures": ([failed_login(A, t * 10) for t in range(4)], []),
    "five failures over six minutes": ([failed_login(A, t * 90) for t in range(5)], []),
    "five failures on two accounts": (
        [failed_login(A if t % 2 else B, t * 10) for t in range(5)],
        [],
    ),
    "successes do not count": (
        [failed_login(A, 0), login(A, 5), failed_login(A, 10), login(A, 15), failed_login(A, 20)]
        + [login(A, 25), failed_login(A, 30)],
        [],
    ),
    "ten failures alert once per window": (
        [failed_login(A, t * 10) for t in range(10)],
        ["failed-logins"],
    ),
    "a new window alerts again": (
        [failed_login(A, t * 10) for t in range(5)] + [failed_login(A, 400 + t) for t in range(5)],
        ["failed-logins", "failed-logins"],
    ),
    "two accounts, two alerts": (
        [failed_login(A, t) for t in range(5)] + [failed_login(B, 10 + t) for t in range(5)],
        ["failed-logins", "failed-logins"],
    ),
    # API keys with every scope.
    "a key with every scope": ([key_created(EVERY_SCOPE)], ["api-key-every-scope"]),
    "a key with a wildcard scope": ([key_created(["*"])], ["api-key-every-scope"]),
    "a key missing one scope": ([key_created(EVERY_SCOPE[1:])], []),
    "a refused key with every scope": ([key_created(EVERY_SCOPE, "denied")], []),
    "a key without scopes listed": ([(0, "api_key.created", "success", "api_key", "k", {})], []),
    # Promotions to owner.
    "a member promoted to owner": ([role_changed("owner")], ["member-promoted-owner"]),
    "a member promoted to admin": ([role_changed("admin")], []),
    "a refused promotion to owner": ([role_changed("owner", "denied")], []),
    "two promotions, two alerts": (
        [role_changed("owner"), role_changed("owner")],
        ["member-promoted-owner", "member-promoted-owner"],
    ),
    # Whole-log exports.
    "the whole log exported": ([exported({})], ["full-log-export"]),
    "a filtered export": ([exported({"action": "member.created"})], []),
    "a time-bounded export": ([exported({"start": "2026-01-01T00:00:00+00:00"})], []),
    "a refused whole export": ([exported({}, "denied")], []),
    # Events no rule watches.
    "unrelated events": ([(0, "member.created", "success", "user", "1", {"role": "owner"})], []),
}


@pytest.fixture
def clock(monkeypatch):
    """Set the time events are recorded at, in seconds from a fixed start."""
    start = timezone.now()
    moment = {"now": start}
    monkeypatch.setattr(timezone, "now", lambda: moment["now"])

    def set_to(seconds: float) -> None:
        moment["now"] = start + timedelta(seconds=seconds)

    return set_to


def play(steps: list[tuple], clock) -> list[str]:
    before = Alert.objects.order_by("-id").values_list("id", flat=True).first() or 0
    for at, action, result, resource_type, resource_id, details in steps:
        clock(at)
        services.record(
            actor=SYSTEM,
            action=action,
            result=result,
            resource_type=resource_type,
            resource_id=resource_id,
            details=details,
        )
    return list(
        Alert.objects.filter(id__gt=before).order_by("id").values_list("rule__code", flat=True)
    )


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_rules_on_event_sequences(acme, clock, name):
    steps, expected = SCENARIOS[name]

    assert play(steps, clock) == expected


@pytest.mark.parametrize("name", [name for name, (_, fired) in SCENARIOS.items() if fired])
def test_a_rule_that_is_off_stays_quiet(acme, clock, name):
    steps, expected = SCENARIOS[name]
    AlertRule.objects.filter(code=expected[0]).update(is_active=False)

    assert play(steps, clock) == []


def test_the_alert_says_what_happened(acme, clock):
    play([failed_login(A, t * 10) for t in range(5)], clock)

    alert = Alert.objects.order_by("-id").first()
    event_sequence = services.AuditEvent.objects.order_by("-sequence").first().sequence
    assert (alert.rule.code, alert.subject, alert.event_sequence) == (
        "failed-logins",
        A,
        event_sequence,
    )
    assert alert.summary == f"5 failed logins for {A} within 5 minutes"
    assert alert.details == {"failures": 5, "window_seconds": 300}


def test_rule_parameters_are_data(acme, clock):
    AlertRule.objects.filter(code="failed-logins").update(
        parameters={"threshold": 3, "window_seconds": 60}
    )

    assert play([failed_login(A, t * 10) for t in range(3)], clock) == ["failed-logins"]
    assert play([failed_login(B, t * 40) for t in range(3)], clock) == []


def test_an_alert_is_published_to_the_organization_after_commit(
    acme, listen, django_capture_on_commit_callbacks
):
    receive = listen(acme.tenant, "audit.alert")

    with django_capture_on_commit_callbacks(execute=True):
        account_services.member_change_role(
            actor=Actor.for_user(acme.owner), user_id=acme.member.pk, role="owner"
        )

    message = receive()
    alert = Alert.objects.order_by("-id").first()
    assert message["subject"] == "audit.alert"
    assert message["tenant"] == str(acme.tenant.public_id)
    assert message["data"] == {
        "id": alert.pk,
        "rule": "member-promoted-owner",
        "rule_name": "Member promoted to owner",
        "severity": "high",
        "summary": "member@acme.test was promoted to owner by owner@acme.test",
        "subject": str(acme.member.pk),
        "event_sequence": alert.event_sequence,
        "details": {"user": str(acme.member.pk), "from": "member"},
        "created_at": alert.created_at.isoformat(),
    }


def test_no_alert_is_published_when_the_change_rolls_back(acme, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        exports.audit_log_export(
            actor=Actor.for_user(acme.admin), format="json", filters=EventFilters()
        )
    assert Alert.objects.filter(rule__code="full-log-export").count() == 1
    assert len(callbacks) == 1  # the alert; the export itself publishes nothing

    # The same from inside a transaction that fails: neither the alert nor its message survive.
    from django.db import transaction

    with (
        django_capture_on_commit_callbacks() as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        exports.audit_log_export(
            actor=Actor.for_user(acme.admin), format="json", filters=EventFilters()
        )
        raise RuntimeError
    assert callbacks == []
    assert Alert.objects.filter(rule__code="full-log-export").count() == 1


def test_the_platform_log_stores_alerts_without_publishing(db, django_capture_on_commit_callbacks):
    from tenants import context

    with context.public_context(), django_capture_on_commit_callbacks() as callbacks:
        services.record(
            actor=SYSTEM,
            action="audit.exported",
            resource_type="audit_log",
            details={"format": "csv", "filters": {}, "whole_log": True},
        )
        assert Alert.objects.filter(rule__code="full-log-export").count() == 1
    assert callbacks == []


def test_unwatched_actions_cost_no_query(acme):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as watched:
        services.record(actor=SYSTEM, action="audit.exported", details={"whole_log": False})
    with CaptureQueriesContext(connection) as unwatched:
        services.record(actor=SYSTEM, action="member.created")

    assert any("audit_alertrule" in query["sql"] for query in watched.captured_queries)
    assert not any("audit_alert" in query["sql"] for query in unwatched.captured_queries)


def test_a_real_key_with_every_grantable_scope_alerts(acme):
    from credentials import services as credentials

    owner = Actor.for_user(acme.owner)
    every = credentials.grantable_scopes(owner)
    credentials.api_key_create(actor=owner, name="ci-partial", scopes=every[:-1])
    assert not Alert.objects.filter(rule__code="api-key-every-scope").exists()

    key, _ = credentials.api_key_create(actor=owner, name="ci-all", scopes=every)

    [alert] = Alert.objects.filter(rule__code="api-key-every-scope")
    assert alert.subject == str(key.pk)
    assert alert.summary == "API key “ci-all” was created with every scope by owner@acme.test"


def test_five_failed_portal_logins_raise_one_alert(org, client_for, in_tenant):
    client = client_for(org)
    with in_tenant(org):
        alerts_before = Alert.objects.count()

    for _ in range(6):
        response = client.post("/login/", {"username": "admin@acme.test", "password": "wrong"})
        assert response.status_code == 200  # the form again, with its error
    client.post("/login/", {"username": "not-an-email", "password": "x"})  # no attempt made

    with in_tenant(org):
        failures = services.AuditEvent.objects.filter(
            action="auth.login", result="failed", resource_id="admin@acme.test"
        )
        # Aggregated per client and account (audit.failures): the first failure, then the one
        # reaching the threshold (standing for four); the sixth waits for the window's summary.
        assert [e.details["count"] for e in failures.order_by("sequence")] == [1, 4]
        assert {(e.actor_kind, e.ip) for e in failures} == {("anonymous", "127.0.0.1")}
        assert not services.AuditEvent.objects.filter(resource_id="not-an-email").exists()
        [alert] = Alert.objects.all()[: Alert.objects.count() - alerts_before]
    assert alert.rule.code == "failed-logins" and alert.subject == "admin@acme.test"
