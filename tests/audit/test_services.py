"""audit.services: the chain, redaction, the tenant id, failures, logins, rules and retention."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from audit import chain, exports, retention, services, verify
from audit.models import AlertRule, AuditCheckpoint, AuditEvent
from audit.verify import verify_chain
from core.actors import Actor
from tenants import context
from tests.audit.conftest import backdate, events_after, head

SYSTEM = Actor.system("tests")


def test_record_links_each_event_to_the_previous_one(acme):
    start = head()

    first = services.record(actor=SYSTEM, action="test.first")
    second = services.record(actor=SYSTEM, action="test.second", result="failed")

    previous = AuditEvent.objects.get(sequence=start)
    assert (first.sequence, second.sequence) == (start + 1, start + 2)
    assert first.previous_hash == previous.hash
    assert second.previous_hash == first.hash
    assert second.hash == chain.compute_hash(AuditEvent.objects.get(pk=second.pk))
    assert second.result == "failed"


def test_record_carries_the_actor_and_where_the_request_came_from(acme):
    actor = Actor.for_user(acme.admin)
    actor = Actor(**{**actor.__dict__, "ip": "203.0.113.9", "user_agent": "curl/8.5"})

    event = services.record(
        actor=actor, action="test.acted", resource_type="user", resource_id=acme.member.pk
    )

    stored = AuditEvent.objects.get(pk=event.pk)
    assert (stored.actor_kind, stored.actor_id, stored.actor_label) == (
        "user",
        str(acme.admin.pk),
        "admin@acme.test",
    )
    assert (stored.ip, stored.user_agent) == ("203.0.113.9", "curl/8.5")
    assert (stored.resource_type, stored.resource_id) == ("user", str(acme.member.pk))


def test_every_event_names_its_tenant(acme, other_org, in_tenant):
    event = services.record(actor=SYSTEM, action="test.tenant")
    with in_tenant(other_org):
        other = services.record(actor=SYSTEM, action="test.tenant")
    with context.public_context():
        platform = services.record(actor=SYSTEM, action="test.tenant")

    assert event.tenant_id == str(acme.tenant.public_id)
    assert other.tenant_id == str(other_org.tenant.public_id)
    assert platform.tenant_id == "platform"


def test_secrets_are_redacted_by_field_name_at_any_depth(acme):
    details = {
        "email": "a@acme.test",
        "password": "hunter2",
        "new_password": "hunter3",
        "Token": "tok_123",
        "api_key": "agp_abc",
        "client_secret": "s3cr3t",
        "Authorization": "Bearer xyz",
        "nested": {"refresh_token": "r", "keep": 1, "deeper": [{"secret_hash": "h"}]},
        "scopes": ["audit:read"],
    }

    event = services.record(actor=SYSTEM, action="test.redaction", details=details)

    stored = AuditEvent.objects.get(pk=event.pk).details
    assert stored == {
        "email": "a@acme.test",
        "password": "[redacted]",
        "new_password": "[redacted]",
        "Token": "[redacted]",
        "api_key": "[redacted]",
        "client_secret": "[redacted]",
        "Authorization": "[redacted]",
        "nested": {
            "refresh_token": "[redacted]",
            "keep": 1,
            "deeper": [{"secret_hash": "[redacted]"}],
        },
        "scopes": ["audit:read"],
    }
    for secret in ("hunter2", "hunter3", "tok_123", "agp_abc", "s3cr3t", "xyz"):
        assert secret not in str(stored)
    assert chain.compute_hash(AuditEvent.objects.get(pk=event.pk)) == event.hash


def test_hostile_input_is_cut_and_cleaned_not_refused(acme):
    actor = Actor(kind="anonymous", label="x\udfff" * 200, user_agent="UA\x00" + "u" * 400)

    event = services.record(
        actor=actor,
        action="test.hostile",
        resource_type="login",
        resource_id="evil\x00@acme.test" + "e" * 300,
        details={
            "when": timezone.now(),
            "text": "nul\x00byte",
            "lone": "half \ud800 a pair",
            "nan": float("nan"),
            "literal": "a \\u0000 stays",
        },
    )

    stored = AuditEvent.objects.get(pk=event.pk)
    assert len(stored.actor_label) == 254 and len(stored.user_agent) == 256
    assert stored.resource_id.startswith("evil\ufffd@acme.test") and len(stored.resource_id) == 128
    assert stored.details["text"] == "nul\ufffdbyte"
    assert stored.details["lone"] == "half \\ud800 a pair"
    assert stored.details["nan"] == "nan"
    assert stored.details["literal"] == "a \\u0000 stays"
    assert isinstance(stored.details["when"], str)
    assert chain.compute_hash(stored) == stored.hash


def test_an_unknown_result_is_refused(acme):
    with pytest.raises(ValueError):
        services.record(actor=SYSTEM, action="test.bad", result="maybe")


def test_the_event_rolls_back_with_the_change(acme):
    start = head()

    with pytest.raises(RuntimeError), transaction.atomic():
        services.record(actor=SYSTEM, action="test.rolled_back")
        raise RuntimeError

    assert head() == start


def test_emit_publishes_after_commit_only(acme, django_capture_on_commit_callbacks, listen):
    receive = listen(acme.tenant, "test.emitted")

    with django_capture_on_commit_callbacks(execute=True):
        services.emit(
            actor=SYSTEM,
            action="test.emitted",
            resource_type="thing",
            resource_id=7,
            details={"name": "x", "token": "t0k"},
        )

    message = receive()
    assert message["subject"] == "test.emitted"
    assert message["tenant"] == str(acme.tenant.public_id)
    assert message["data"] == {"name": "x", "token": "[redacted]"}


def test_emit_publishes_on_its_subject_and_records_its_action(
    acme, django_capture_on_commit_callbacks, listen
):
    receive = listen(acme.tenant, "agents.task")
    start = head()

    with django_capture_on_commit_callbacks(execute=True):
        services.emit(
            actor=SYSTEM,
            action="task.published",
            subject="agents.task",
            details={"kind": "k"},
            data={"kind": "k", "token": "kept"},
            verbatim=True,
        )

    assert receive()["data"] == {"kind": "k", "token": "kept"}
    assert [event.action for event in events_after(start)] == ["task.published"]


def test_emit_without_an_action_publishes_and_records_nothing(
    acme, django_capture_on_commit_callbacks, listen
):
    receive = listen(acme.tenant, "agents.1.metrics")
    start = head()

    with django_capture_on_commit_callbacks(execute=True):
        event = services.emit(actor=SYSTEM, action=None, subject="agents.1.metrics", data={"n": 1})

    assert event is None
    assert receive()["data"] == {"n": 1}
    assert head() == start
    with pytest.raises(ValueError):
        services.emit(actor=SYSTEM, action=None)


def test_failure_recorded_records_a_failed_event_and_keeps_no_change(acme):
    start = head()

    with (
        pytest.raises(ValidationError),
        services.failure_recorded(
            actor=SYSTEM, action="test.changed", resource_type="thing", resource_id=3
        ),
        transaction.atomic(),
    ):
        services.record(actor=SYSTEM, action="test.changed", resource_type="thing")
        raise ValidationError("The thing cannot change now.")

    [event] = events_after(start)
    assert (event.action, event.result, event.resource_id) == ("test.changed", "failed", "3")
    assert event.details == {"reason": "The thing cannot change now."}


def test_login_record_success_and_failure(acme):
    start = head()

    services.login_record(
        actor=Actor.for_user(acme.member), email="member@acme.test", succeeded=True
    )
    services.login_record(actor=Actor.anonymous(), email=" Nobody@Acme.test ", succeeded=False)

    ok, failed = events_after(start)
    assert (ok.action, ok.result, ok.actor_label, ok.resource_id) == (
        "auth.login",
        "success",
        "member@acme.test",
        "member@acme.test",
    )
    assert (failed.action, failed.result, failed.actor_kind, failed.resource_id) == (
        "auth.login",
        "failed",
        "anonymous",
        "nobody@acme.test",
    )


# --- Alert rules: switching on and off -----------------------------------------------------------


@pytest.mark.parametrize("role", ["admin", "owner"])
def test_admins_switch_rules_off_and_on(acme, role, django_capture_on_commit_callbacks):
    rule = AlertRule.objects.get(code="member-promoted-owner")
    actor = Actor.for_user(acme.user(role))
    start = head()

    with django_capture_on_commit_callbacks() as callbacks:
        services.alert_rule_set_active(actor=actor, rule_id=rule.pk, is_active=False)
    services.alert_rule_set_active(actor=actor, rule_id=rule.pk, is_active=False)  # no change
    off = AlertRule.objects.get(pk=rule.pk).is_active
    services.alert_rule_set_active(actor=actor, rule_id=rule.pk, is_active=True)

    assert off is False and AlertRule.objects.get(pk=rule.pk).is_active is True
    assert [(e.action, e.result, e.actor_label) for e in events_after(start)] == [
        ("audit.rule_disabled", "success", acme.user(role).email),
        ("audit.rule_enabled", "success", acme.user(role).email),
    ]
    assert len(callbacks) == 1


@pytest.mark.parametrize("role", ["viewer", "member"])
def test_others_cannot_switch_rules(acme, role):
    rule = AlertRule.objects.get(code="member-promoted-owner")
    start = head()

    with pytest.raises(PermissionDenied):
        services.alert_rule_set_active(
            actor=Actor.for_user(acme.user(role)), rule_id=rule.pk, is_active=False
        )

    assert AlertRule.objects.get(pk=rule.pk).is_active is True
    [event] = events_after(start)
    assert (event.action, event.result) == ("audit.rule_disabled", "denied")


def test_switching_an_unknown_rule_is_not_found(acme):
    with pytest.raises(AlertRule.DoesNotExist):
        services.alert_rule_set_active(
            actor=Actor.for_user(acme.owner), rule_id=999999, is_active=False
        )


def test_default_rules_exist_in_every_schema(org, other_org, in_tenant):
    expected = {"failed-logins", "api-key-every-scope", "member-promoted-owner", "full-log-export"}
    for target in (org, other_org):
        with in_tenant(target):
            assert (
                set(AlertRule.objects.filter(is_active=True).values_list("code", flat=True))
                == expected
            )
    with context.public_context():
        assert set(AlertRule.objects.values_list("code", flat=True)) == expected


# --- Export and verify record themselves ---------------------------------------------------------


def test_an_export_is_recorded_before_it_streams(acme):
    from audit.selectors import EventFilters

    start = head()
    export = exports.audit_log_export(
        actor=Actor.for_user(acme.admin), format="csv", filters=EventFilters(action="x.y")
    )

    [event] = events_after(start)
    assert (event.action, event.result, event.actor_label) == (
        "audit.exported",
        "success",
        "admin@acme.test",
    )
    assert event.details == {"format": "csv", "filters": {"action": "x.y"}, "whole_log": False}
    assert export.through_sequence == event.sequence
    assert export.filename.startswith(
        f"audit-{acme.tenant.public_id}-"
    ) and export.filename.endswith(".csv")


@pytest.mark.parametrize("role", ["viewer", "member"])
def test_an_export_without_audit_read_is_denied_and_recorded(acme, role):
    from audit.selectors import EventFilters

    start = head()
    with pytest.raises(PermissionDenied):
        exports.audit_log_export(
            actor=Actor.for_user(acme.user(role)), format="json", filters=EventFilters()
        )

    [event] = events_after(start)
    assert (event.action, event.result) == ("audit.exported", "denied")


def test_an_unknown_export_format_is_refused_and_changes_nothing(acme):
    from audit.selectors import EventFilters

    start = head()
    with pytest.raises(ValidationError) as error:
        exports.audit_log_export(
            actor=Actor.for_user(acme.admin), format="xml", filters=EventFilters()
        )
    assert "format" in error.value.message_dict
    assert head() == start


def test_verify_reports_and_records(acme):
    start = head()

    report = verify.audit_log_verify(actor=Actor.for_user(acme.owner))

    assert report.is_intact and report.last_sequence == start
    [event] = events_after(start)
    assert (event.action, event.details["intact"], event.details["checked"]) == (
        "audit.verified",
        True,
        report.checked,
    )


# --- Retention -----------------------------------------------------------------------------------


def test_retention_removes_old_events_and_keeps_the_chain_verifiable(acme):
    for number in range(5):
        services.record(actor=SYSTEM, action="test.old", details={"n": number})
    old_through = head()
    services.record(actor=SYSTEM, action="test.recent")
    backdate(400, through=old_through)
    last_removed = AuditEvent.objects.get(sequence=old_through)
    tenant_id = str(acme.tenant.public_id)
    assert verify_chain(tenant_id=tenant_id).is_intact

    result = retention.audit_retention_apply(actor=SYSTEM, retention_days=365)

    assert result.removed == old_through and result.through_sequence == old_through
    assert not AuditEvent.objects.filter(sequence__lte=old_through).exists()
    checkpoint = AuditCheckpoint.objects.get()
    assert (checkpoint.sequence, checkpoint.hash, checkpoint.removed_count) == (
        old_through,
        last_removed.hash,
        old_through,
    )
    ran = AuditEvent.objects.order_by("-sequence").first()
    assert (ran.action, ran.actor_label) == ("audit.retention_applied", "tests")
    assert ran.details["removed"] == old_through
    assert ran.details["through_sequence"] == old_through
    assert ran.details["last_removed_hash"] == last_removed.hash
    report = verify_chain(tenant_id=tenant_id)
    assert report.is_intact
    assert (report.first_sequence, report.checkpoint_sequence) == (old_through + 1, old_through)


def test_retention_with_nothing_old_only_records_that_it_ran(acme):
    start = head()

    result = retention.audit_retention_apply(actor=SYSTEM, retention_days=365)

    assert (result.removed, result.through_sequence) == (0, None)
    [event] = events_after(start)
    assert (event.action, event.details["removed"]) == ("audit.retention_applied", 0)
    assert not AuditCheckpoint.objects.exists()


def test_retention_is_for_the_platform_only(acme):
    start = head()
    with pytest.raises(PermissionDenied):
        retention.audit_retention_apply(actor=Actor.for_user(acme.owner), retention_days=1)
    [event] = events_after(start)
    assert (event.action, event.result) == ("audit.retention_applied", "denied")
    assert AuditEvent.objects.filter(sequence=1).exists()


def test_a_log_emptied_by_retention_continues_from_its_checkpoint(acme):
    backdate(400, through=head())
    retention.audit_retention_apply(
        actor=SYSTEM, retention_days=30, now=timezone.now() + timedelta(days=60)
    )
    # The retention event itself is recent; everything before it is gone.
    assert AuditEvent.objects.count() == 1

    services.record(actor=SYSTEM, action="test.after")

    assert verify_chain(tenant_id=str(acme.tenant.public_id)).is_intact


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("10.0.0.1", "10.0.0.1"),
        ("2001:0DB8:0:0::1", "2001:db8::1"),
        ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
        ("::1", "::1"),
        ("not-an-address", None),
        ("", None),
    ],
)
def test_addresses_are_stored_as_the_database_returns_them_and_still_verify(acme, given, stored):
    event = services.record(actor=Actor(kind="anonymous", ip=given), action="test.ip")

    reloaded = AuditEvent.objects.get(pk=event.pk)
    assert (event.ip, reloaded.ip) == (stored, stored)
    assert chain.compute_hash(reloaded) == event.hash
