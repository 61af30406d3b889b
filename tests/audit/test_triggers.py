"""The database itself refuses to change or remove audit records (migration 0003), per schema."""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from audit import retention, services
from audit.models import AuditCheckpoint, AuditEvent
from core.actors import Actor
from tenants import context

SYSTEM = Actor.system("tests")
triggers = importlib.import_module("audit.migrations.0003_append_only_triggers")


def run(sql: str, params: list | None = None) -> int:
    """Run raw SQL in a savepoint (a refusal must not abort the test's transaction)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def refused(sql: str, params: list | None = None) -> str:
    with pytest.raises(DatabaseError) as error:
        run(sql, params)
    return str(error.value)


@pytest.fixture(params=["tenant", "public"])
def schema(request, org):
    """Each test runs in an organization's schema and in the platform's (public) schema."""
    enter = (
        context.tenant_context(org.tenant)
        if request.param == "tenant"
        else context.public_context()
    )
    with enter:
        services.record(actor=SYSTEM, action="test.sealed", details={"n": 1})
        yield request.param


def test_update_through_raw_sql_is_refused(schema):
    event = AuditEvent.objects.order_by("-sequence").first()

    message = refused(
        "UPDATE audit_auditevent SET details = '{\"n\": 2}' WHERE id = %s", [event.pk]
    )

    assert "append-only" in message and "UPDATE" in message
    assert AuditEvent.objects.get(pk=event.pk).details == {"n": 1}


def test_update_through_the_orm_is_refused(schema):
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.filter(action="test.sealed").update(action="test.changed")
    assert AuditEvent.objects.filter(action="test.sealed").exists()


def test_delete_is_refused(schema):
    count = AuditEvent.objects.count()

    message = refused("DELETE FROM audit_auditevent")

    assert "DELETE" in message
    assert AuditEvent.objects.count() == count


def test_truncate_is_refused_by_the_statement_trigger(schema):
    count = AuditEvent.objects.count()

    message = refused("TRUNCATE audit_auditevent")

    assert "TRUNCATE" in message
    assert AuditEvent.objects.count() == count


def test_the_retention_setting_allows_deleting_only_up_to_its_bound(schema):
    newest = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first()
    oldest = AuditEvent.objects.order_by("sequence").values_list("sequence", flat=True).first()
    with transaction.atomic():
        run("SELECT set_config('audit.retention_through', %s, true)", [str(oldest)])

        # Beyond the bound: refused even with the setting on.
        refused("DELETE FROM audit_auditevent WHERE sequence = %s", [newest])
        refused("UPDATE audit_auditevent SET action = 'x' WHERE sequence = %s", [oldest])
        refused("TRUNCATE audit_auditevent")
        removed = run("DELETE FROM audit_auditevent WHERE sequence = %s", [oldest])

        assert removed == 1
        transaction.set_rollback(True)  # keep the session's log as it was


def test_after_the_retention_service_nothing_else_may_delete(schema):
    """The service closes its window: later statements in the same transaction are refused."""
    later = timezone.now() + timedelta(days=2)
    recorded = AuditEvent.objects.count()
    result = retention.audit_retention_apply(actor=SYSTEM, retention_days=1, now=later)
    assert result.removed == recorded  # every event is more than a day old by then

    refused("DELETE FROM audit_auditevent")

    assert list(AuditEvent.objects.values_list("action", flat=True)) == ["audit.retention_applied"]


def test_checkpoints_are_append_only_too(schema):
    AuditCheckpoint.objects.create(sequence=10**12, hash="a" * 64, removed_count=0)

    for sql in (
        "UPDATE audit_auditcheckpoint SET hash = 'b'",
        "DELETE FROM audit_auditcheckpoint",
        "TRUNCATE audit_auditcheckpoint",
    ):
        refused(sql)
    assert AuditCheckpoint.objects.get(sequence=10**12).hash == "a" * 64


def test_the_triggers_belong_to_the_schema_they_guard(org):
    """Each schema has its own function and triggers: nothing resolves through `public`."""
    with context.tenant_context(org.tenant), connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT t.tgname, n.nspname
            FROM pg_trigger t
            JOIN pg_proc p ON p.oid = t.tgfoid
            JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE t.tgrelid = 'audit_auditevent'::regclass AND NOT t.tgisinternal
            ORDER BY t.tgname
            """
        )
        rows = cursor.fetchall()
    assert rows == [
        ("audit_event_no_truncate", org.tenant.schema_name),
        ("audit_event_no_update_delete", org.tenant.schema_name),
    ]


def test_the_migration_reverses_and_reapplies(org):
    with context.tenant_context(org.tenant):
        event = services.record(actor=SYSTEM, action="test.sealed")
        with transaction.atomic():
            run(triggers.REVERSE)
            assert run("UPDATE audit_auditevent SET action = 'x' WHERE id = %s", [event.pk]) == 1
            run(triggers.FORWARD)
            refused("UPDATE audit_auditevent SET action = 'y' WHERE id = %s", [event.pk])
            transaction.set_rollback(True)
        assert AuditEvent.objects.get(pk=event.pk).action == "test.sealed"
