"""Tampering through raw SQL, bypassing the triggers as a superuser, is found at the right event."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from audit import services
from audit.chain import compute_hash
from audit.models import AuditCheckpoint, AuditEvent
from audit.verify import verify_chain
from core.actors import Actor
from tenants import context
from tests.audit.conftest import tamper

SYSTEM = Actor.system("tests")


@pytest.fixture
def chain(acme):
    """Five fresh events at the end of organization A's log; returns their sequences."""
    return [
        services.record(actor=SYSTEM, action="test.link", details={"n": n}).sequence
        for n in range(5)
    ]


def verify(org) -> object:
    return verify_chain(tenant_id=str(org.tenant.public_id))


def test_an_untouched_chain_is_intact(acme, chain):
    report = verify(acme)

    assert report.is_intact
    assert (report.first_sequence, report.last_sequence) == (1, chain[-1])
    assert report.checked == chain[-1]
    assert report.head_hash == AuditEvent.objects.get(sequence=chain[-1]).hash


def test_changed_details_are_found_at_that_event(acme, chain):
    tamper("UPDATE audit_auditevent SET details = '{\"n\": 99}' WHERE sequence = %s", [chain[2]])

    report = verify(acme)

    assert not report.is_intact
    assert report.broken_sequence == chain[2]
    assert "contents changed" in report.reason
    assert report.checked == chain[2] - 1


def test_a_changed_actor_is_found(acme, chain):
    tamper(
        "UPDATE audit_auditevent SET actor_label = 'someone-else' WHERE sequence = %s", [chain[1]]
    )

    assert verify(acme).broken_sequence == chain[1]


def test_a_deleted_event_is_found_at_its_successor(acme, chain):
    tamper("DELETE FROM audit_auditevent WHERE sequence = %s", [chain[1]])

    report = verify(acme)

    assert report.broken_sequence == chain[2]
    assert report.reason == f"event #{chain[1]} is missing"


def test_several_deleted_events_are_named(acme, chain):
    tamper("DELETE FROM audit_auditevent WHERE sequence IN (%s, %s)", [chain[1], chain[2]])

    report = verify(acme)

    assert report.broken_sequence == chain[3]
    assert report.reason == f"events #{chain[1]} to #{chain[2]} are missing"


def test_deleting_the_first_events_is_found(acme, chain):
    tamper("DELETE FROM audit_auditevent WHERE sequence <= 2")

    report = verify(acme)

    assert (report.broken_sequence, report.reason) == (3, "events #1 to #2 are missing")


def test_swapped_events_are_found_at_the_first_of_them(acme, chain):
    a, b = chain[1], chain[2]
    parked = 10**12
    tamper("UPDATE audit_auditevent SET sequence = %s WHERE sequence = %s", [parked, a])
    tamper("UPDATE audit_auditevent SET sequence = %s WHERE sequence = %s", [a, b])
    tamper("UPDATE audit_auditevent SET sequence = %s WHERE sequence = %s", [b, parked])

    report = verify(acme)

    assert report.broken_sequence == a
    assert "contents changed" in report.reason


def test_a_rewritten_event_with_a_recomputed_hash_breaks_the_next_link(acme, chain):
    """An attacker who knows the algorithm re-seals the event: its successor no longer links."""
    event = AuditEvent.objects.get(sequence=chain[2])
    event.details = {"n": "forged"}
    event.hash = compute_hash(event)
    tamper(
        "UPDATE audit_auditevent SET details = %s, hash = %s WHERE id = %s",
        [json.dumps(event.details), event.hash, event.pk],
    )

    report = verify(acme)

    assert report.broken_sequence == chain[3]
    assert f"does not link to event #{chain[2]}" in report.reason


def test_an_inserted_event_is_found(acme, chain):
    """Shift the tail up by one and slip a forged event into the gap."""
    tamper(
        "UPDATE audit_auditevent SET sequence = sequence + 1000000 WHERE sequence > %s", [chain[2]]
    )
    tamper("UPDATE audit_auditevent SET sequence = sequence - 1000000 + 1 WHERE sequence > 1000000")
    forged = AuditEvent.objects.get(sequence=chain[2])
    forged.pk = None
    forged.sequence = chain[2] + 1
    forged.action = "test.forged"
    forged.previous_hash = AuditEvent.objects.get(sequence=chain[2]).hash
    forged.hash = compute_hash(forged)
    tamper(
        "INSERT INTO audit_auditevent (tenant_id, sequence, occurred_at, actor_kind, actor_id, "
        "actor_label, action, resource_type, resource_id, result, ip, user_agent, details, "
        "previous_hash, hash) SELECT tenant_id, %s, occurred_at, actor_kind, actor_id, "
        "actor_label, %s, resource_type, resource_id, result, ip, user_agent, details, %s, %s "
        "FROM audit_auditevent WHERE sequence = %s",
        [forged.sequence, forged.action, forged.previous_hash, forged.hash, chain[2]],
    )

    report = verify(acme)

    # The forged event links back correctly; the event after it no longer does (and its own
    # sequence number, which it was sealed with, changed).
    assert report.broken_sequence == chain[2] + 2
    assert not report.is_intact


def test_an_event_copied_from_another_organization_is_found(acme, other_org, in_tenant, chain):
    with in_tenant(other_org):
        foreign = services.record(actor=SYSTEM, action="test.foreign")
    tamper("DELETE FROM audit_auditevent WHERE sequence = %s", [chain[-1]])
    copy = AuditEvent(
        **{
            field.name: getattr(foreign, field.name)
            for field in AuditEvent._meta.fields
            if field.name != "id"
        }
    )
    copy.sequence = chain[-1]
    copy.previous_hash = AuditEvent.objects.get(sequence=chain[-2]).hash
    copy.hash = compute_hash(copy)
    copy.save(force_insert=True)

    report = verify(acme)

    assert report.broken_sequence == chain[-1]
    assert "belongs to another log" in report.reason


def test_a_forged_checkpoint_does_not_hide_deleted_events(acme, chain):
    """Deleting the start and adding a checkpoint by hand: no retention event confirms it."""
    last_removed = AuditEvent.objects.get(sequence=chain[0])
    tamper("DELETE FROM audit_auditevent WHERE sequence <= %s", [chain[0]])
    AuditCheckpoint.objects.create(
        sequence=last_removed.sequence, hash=last_removed.hash, removed_count=chain[0]
    )

    report = verify(acme)

    assert report.broken_sequence == chain[0] + 1
    assert "not confirmed by a retention event" in report.reason


def test_the_walk_holds_one_chunk_at_a_time(acme, chain):
    report = verify_chain(tenant_id=str(acme.tenant.public_id), chunk_size=2)

    assert report.is_intact and report.checked == chain[-1]


def test_the_platform_log_verifies(db):
    with context.public_context():
        event = services.record(actor=SYSTEM, action="test.platform")
        report = verify_chain(tenant_id="platform")

    assert report.is_intact and report.checked == event.sequence


# --- manage.py verify_audit ----------------------------------------------------------------------


def test_command_reports_an_intact_log(acme, chain, capsys):
    call_command("verify_audit", "--tenant", "acme")

    out = capsys.readouterr().out
    assert out.startswith(f"acme: intact. {chain[-1]} events checked (#1 to #{chain[-1]}).")
    assert "head hash: " in out


def test_command_reports_where_the_log_breaks_and_fails(acme, chain, capsys):
    tamper("UPDATE audit_auditevent SET action = 'x' WHERE sequence = %s", [chain[3]])

    with pytest.raises(SystemExit) as exit_:
        call_command("verify_audit", "--tenant", "acme")

    assert exit_.value.code == 1
    out = capsys.readouterr().out
    assert out.startswith(f"acme: BROKEN at event #{chain[3]}: its contents changed")


def test_command_prints_json(acme, chain, capsys):
    call_command("verify_audit", "--tenant", "acme", "--json")

    report = json.loads(capsys.readouterr().out)
    assert report["is_intact"] is True and report["last_sequence"] == chain[-1]


def test_command_verifies_the_platform_log(db, capsys):
    with context.public_context():
        services.record(actor=SYSTEM, action="test.platform")

    call_command("verify_audit", "--platform")

    assert capsys.readouterr().out.startswith("platform: intact.")


def test_command_refuses_an_unknown_organization(db):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="No organization with the slug “nope”"):
        call_command("verify_audit", "--tenant", "nope")
