"""Deferred sealing (audit/sealing.py): events are inserted unchained, without the chain's lock,
and chained after commit by one sealer per schema; verification, exports and retention seal
first, and tampering is found as before. (The rest of the suite's in-transaction tests run
AUDIT_SEALER=immediate, tests/conftest.py; processes it starts run the settings' default.)"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from audit import chain, exports, retention, sealing, services
from audit.models import Alert, AuditEvent
from audit.selectors import EventFilters
from audit.verify import verify_chain
from core.actors import Actor
from tenants import context
from tests import live
from tests.audit.conftest import tamper

SYSTEM = Actor.system("tests")


@pytest.fixture
def deferred(settings):
    settings.AUDIT_SEALER = "off"  # nothing seals in-process: the tests call the sealer


def verify(org):
    return verify_chain(tenant_id=str(org.tenant.public_id))


def test_an_event_is_inserted_unsealed_then_chained_in_order(deferred, acme):
    first = services.record(actor=SYSTEM, action="test.deferred", details={"n": 1})
    second = services.record(actor=SYSTEM, action="test.deferred", details={"n": 2})
    assert (first.sequence, first.hash, second.sequence) == (None, "", None)

    assert sealing.seal() == 2

    first.refresh_from_db()
    second.refresh_from_db()
    assert second.sequence == first.sequence + 1
    assert second.previous_hash == first.hash and first.hash
    assert first.sealed_at is not None
    assert sealing.seal() == 0  # nothing left: one index probe, no lock


def test_verification_seals_first_and_the_chain_is_intact(deferred, acme):
    for n in range(3):
        services.record(actor=SYSTEM, action="test.deferred", details={"n": n})

    report = verify(acme)

    assert report.is_intact
    assert not AuditEvent.objects.filter(sequence__isnull=True).exists()


@pytest.mark.parametrize("tampering", ["edit", "delete", "reorder", "insert"])
def test_tampering_after_deferred_sealing_is_found(deferred, acme, tampering):
    for n in range(5):
        services.record(actor=SYSTEM, action="test.deferred", details={"n": n})
    sealing.seal()
    seqs = list(
        AuditEvent.objects.filter(action="test.deferred")
        .order_by("sequence")
        .values_list("sequence", flat=True)
    )
    if tampering == "edit":
        tamper("UPDATE audit_auditevent SET details = '{\"n\": 9}' WHERE sequence = %s", [seqs[2]])
        expected = seqs[2]
    elif tampering == "delete":
        tamper("DELETE FROM audit_auditevent WHERE sequence = %s", [seqs[2]])
        expected = seqs[3]
    elif tampering == "reorder":
        parked = 10**12
        tamper("UPDATE audit_auditevent SET sequence = %s WHERE sequence = %s", [parked, seqs[1]])
        tamper("UPDATE audit_auditevent SET sequence = %s WHERE sequence = %s", [seqs[1], seqs[2]])
        tamper("UPDATE audit_auditevent SET sequence = %s WHERE sequence = %s", [seqs[2], parked])
        expected = seqs[1]
    else:  # a sealed-looking row slipped in: the tail shifted up by one
        tamper(
            "UPDATE audit_auditevent SET sequence = sequence + 1000000 WHERE sequence > %s",
            [seqs[2]],
        )
        tamper("UPDATE audit_auditevent SET sequence = sequence - 999999 WHERE sequence > 1000000")
        tamper(
            "INSERT INTO audit_auditevent (tenant_id, sequence, occurred_at, actor_kind, actor_id,"
            " actor_label, action, resource_type, resource_id, result, ip, user_agent, details,"
            " previous_hash, hash, sealed_at) SELECT tenant_id, %s, occurred_at, actor_kind,"
            " actor_id, actor_label, 'test.forged', resource_type, resource_id, result, ip,"
            " user_agent, details, hash, repeat('f', 64), sealed_at FROM audit_auditevent"
            " WHERE sequence = %s",
            [seqs[2] + 1, seqs[2]],
        )
        expected = seqs[2] + 1

    report = verify(acme)

    assert not report.is_intact and report.broken_sequence == expected


def test_an_event_inserted_unsealed_into_the_past_is_never_sealed_and_breaks_the_log(
    deferred, acme, settings
):
    """Bypassing `record` with a backdated row: the sealer refuses it, verification reports it.
    (A row dated now is sealed like any other: as before, whoever can write the table can append
    a well-formed event at the end; the chain proves order and integrity, not authorship.)"""
    settings.AUDIT_SEAL_MAX_DELAY_SECONDS = 60
    services.record(actor=SYSTEM, action="test.deferred")
    sealing.seal()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO audit_auditevent (tenant_id, occurred_at, actor_kind, actor_id,"
            " actor_label, action, resource_type, resource_id, result, user_agent, details,"
            " previous_hash, hash) VALUES (%s, now() - interval '1 day', 'system', '', 'x',"
            " 'test.backdated', '', '', 'success', '', '{}', '', '')",
            [str(acme.tenant.public_id)],
        )

    assert sealing.seal() == 0
    report = verify(acme)

    assert not report.is_intact and "inserted bypassing the log" in report.reason
    assert AuditEvent.objects.get(action="test.backdated").sequence is None


def test_the_trigger_lets_sealing_set_only_the_chain_fields_once(deferred, acme):
    event = services.record(actor=SYSTEM, action="test.deferred")

    def refused(sql, params):
        with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)

    seal_sql = (
        "UPDATE audit_auditevent SET sequence = 10000000, previous_hash = repeat('a', 64),"
        " hash = repeat('b', 64), sealed_at = now()"
    )
    refused(seal_sql + ", action = 'test.changed' WHERE id = %s", [event.pk])  # content too
    refused("UPDATE audit_auditevent SET sequence = 10000000 WHERE id = %s", [event.pk])  # no hash
    sealing.seal()
    refused(seal_sql + " WHERE id = %s", [event.pk])  # sealed once: never again
    refused("DELETE FROM audit_auditevent WHERE id = %s", [event.pk])


def test_alerts_are_raised_when_their_events_are_sealed(deferred, acme):
    for _ in range(5):
        services.record(
            actor=SYSTEM,
            action="auth.login",
            result="failed",
            resource_type="login",
            resource_id="victim@acme.test",
        )
    assert not Alert.objects.filter(subject="victim@acme.test").exists()

    sealing.seal()

    alert = Alert.objects.get(subject="victim@acme.test")
    assert alert.event_sequence == AuditEvent.objects.order_by("-sequence").first().sequence


def test_an_export_covers_everything_up_to_its_own_event(deferred, acme):
    services.record(actor=SYSTEM, action="test.deferred")

    export = exports.audit_log_export(actor=SYSTEM, format="json", filters=EventFilters())

    own = AuditEvent.objects.filter(action="audit.exported").order_by("-sequence").first()
    assert export.through_sequence == own.sequence is not None


def test_retention_seals_first_and_the_log_still_verifies(deferred, acme):
    services.record(actor=SYSTEM, action="test.deferred")
    later = AuditEvent.objects.order_by("-occurred_at").first().occurred_at + timedelta(days=2)

    result = retention.audit_retention_apply(actor=SYSTEM, retention_days=1, now=later)

    assert result.removed >= 1
    assert verify(acme).is_intact


def test_the_seal_audit_command_seals_every_log(deferred, acme, capsys):
    services.record(actor=SYSTEM, action="test.deferred")
    with context.public_context():
        services.record(actor=SYSTEM, action="test.deferred")

    call_command("seal_audit")

    assert capsys.readouterr().out.strip().endswith("events sealed.")
    assert not AuditEvent.objects.filter(sequence__isnull=True).exists()
    with context.public_context():
        assert not AuditEvent.objects.filter(sequence__isnull=True).exists()


# --- Committed writers (real threads, real transactions) ----------------------------------------


def test_writers_of_one_organization_no_longer_wait_for_each_other(scratch_org, settings):
    """Before, the second writer waited for the first's commit (the chain's lock)."""
    settings.AUDIT_SEALER = "inline"
    tenant = scratch_org.tenant
    recorded, release, done = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow_writer() -> None:
        try:
            with context.tenant_context(tenant), transaction.atomic():
                services.record(actor=SYSTEM, action="test.slow")
                recorded.set()
                release.wait(30)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    def fast_writer() -> None:
        try:
            with context.tenant_context(tenant), transaction.atomic():
                services.record(actor=SYSTEM, action="test.fast")
            done.set()
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    slow = threading.Thread(target=slow_writer)
    slow.start()
    assert recorded.wait(30)
    fast = threading.Thread(target=fast_writer)
    fast.start()
    finished_while_slow_open = done.wait(10)
    release.set()
    slow.join()
    fast.join()

    assert errors == [] and finished_while_slow_open
    with context.tenant_context(tenant):
        actions = list(AuditEvent.objects.order_by("sequence").values_list("action", flat=True))
        report = verify_chain(tenant_id=str(tenant.public_id))
    assert actions[-2:] == ["test.fast", "test.slow"]  # chained in commit order
    assert report.is_intact


def test_the_sealer_thread_seals_after_commit(scratch_org, settings):
    settings.AUDIT_SEALER = "thread"
    tenant = scratch_org.tenant
    try:
        with context.tenant_context(tenant):
            for n in range(20):
                with transaction.atomic():
                    services.record(actor=SYSTEM, action="test.threaded", details={"n": n})
            deadline = time.monotonic() + 30
            while AuditEvent.objects.filter(sequence__isnull=True).exists():
                assert time.monotonic() < deadline, "the sealer thread sealed nothing in 30 s"
                time.sleep(0.05)
            report = verify_chain(tenant_id=str(tenant.public_id))
    finally:
        settings.AUDIT_SEALER = "immediate"
        sealing._sealer.stop()  # its connection must not outlive the test database
    assert report.is_intact


# Another process with the production settings (no AUDIT_SEALER in its environment): prints its
# mode, records `count` events in the organization, each in its own committed transaction, prints
# their ids, then waits for a line on stdin (its sealer thread keeps running meanwhile).
DEFAULT_WRITER = textwrap.dedent(
    """
    import json, sys
    import django
    django.setup()
    from django.conf import settings
    from django.db import transaction
    from audit import services
    from core.actors import Actor
    from tenants import context
    from tenants.models import Tenant

    print(settings.AUDIT_SEALER, flush=True)
    with context.public_context():
        tenant = Tenant.objects.get(slug=sys.argv[1])
    ids = []
    with context.tenant_context(tenant):
        for n in range(int(sys.argv[2])):
            with transaction.atomic():
                event = services.record(
                    actor=Actor.system("tests"), action="test.default_sealer", details={"n": n}
                )
            ids.append(event.pk)
    print(json.dumps(ids), flush=True)
    sys.stdin.readline()
    """
)


def test_the_default_settings_seal_a_committed_write_after_commit(scratch_org):
    """Production's default, end to end: a process run without any AUDIT_SEALER chains its
    committed events after commit (its sealer thread), while it is still running, and the
    organization's chain verifies."""
    env = live.environment()
    env.pop("AUDIT_SEALER", None)
    tenant = scratch_org.tenant
    writer = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", DEFAULT_WRITER, tenant.slug, "20"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=live.settings.BASE_DIR,
    )
    try:
        assert writer.stdout.readline().strip() == "thread"
        ids = json.loads(writer.stdout.readline())
        assert len(ids) == 20
        with context.tenant_context(tenant):
            events = AuditEvent.objects.filter(pk__in=ids)
            deadline = time.monotonic() + 30
            while events.filter(sequence__isnull=True).exists():
                assert writer.poll() is None, "the writer ended before its events were sealed"
                assert time.monotonic() < deadline, "nothing sealed the events within 30 s"
                time.sleep(0.05)
            sequences = list(events.order_by("id").values_list("sequence", flat=True))
            report = verify_chain(tenant_id=str(tenant.public_id))
    finally:
        writer.stdin.close()
        writer.wait(timeout=30)
    assert sequences == sorted(sequences) and len(set(sequences)) == 20  # in commit order
    assert report.is_intact


# --- The sealer's pass in two round trips, and one leader per schema ----------------------------


def _committed(tenant, count, **fields):
    """`count` events recorded and committed (nothing seals them: AUDIT_SEALER=off)."""
    with context.tenant_context(tenant):
        for n in range(count):
            with transaction.atomic():
                services.record(**{"actor": SYSTEM, "action": "test.pipelined", **fields})


def test_the_pipelined_pass_hashes_exactly_what_verification_recomputes(scratch_org, settings):
    settings.AUDIT_SEALER = "off"
    tenant = scratch_org.tenant
    odd = Actor(kind="user", id="7", label="Zoë «x»\x00", ip="2001:DB8::0:1", user_agent="é\ud800")
    _committed(tenant, 1)
    with context.tenant_context(tenant):
        for details in [
            {"n": 1.5, "nan": float("nan"), "inf": float("-inf"), "big": 2**70},
            {"nested": [{"ü": "\u2028", "emoji": "🙂"}, None, True], "password": "hunter2"},
            {"text": 'line\nbreak\ttab "quoted" \\ back'},
        ]:
            with transaction.atomic():
                services.record(actor=odd, action="test.pipelined", details=details)
        with transaction.atomic():
            services.record(actor=SYSTEM, action="test.pipelined", resource_id=12345)
        _committed(tenant, 4)

        sealed = sealing.seal_pass(batch_size=3)  # several batches, each two round trips

        assert sealed == 9 and sealing.seal_pass() == 0
        events = list(AuditEvent.objects.filter(action="test.pipelined").order_by("sequence"))
        assert [event.hash for event in events] == [chain.compute_hash(e) for e in events]
        assert all(event.sealed_at is not None for event in events)
        report = verify_chain(tenant_id=str(tenant.public_id))
    assert report.is_intact, report.reason


def test_a_watched_action_is_sealed_through_the_orm_with_its_alert(scratch_org, settings):
    settings.AUDIT_SEALER = "off"
    tenant = scratch_org.tenant
    _committed(
        tenant,
        5,
        action="auth.login",
        result="failed",
        resource_type="login",
        resource_id="victim@scratch.test",
    )
    with context.tenant_context(tenant):
        assert sealing.seal_pass() == 5
        alert = Alert.objects.get(subject="victim@scratch.test")
        assert alert.event_sequence == AuditEvent.objects.order_by("-sequence").first().sequence
        assert verify_chain(tenant_id=str(tenant.public_id)).is_intact


def _sealed(tenant, action):
    with context.tenant_context(tenant):
        return not AuditEvent.objects.filter(action=action, sequence__isnull=True).exists()


def test_one_leader_seals_for_every_process(scratch_org, settings):
    """Two sealers (two threads, two connections: two processes as far as PostgreSQL knows). The
    first woken leads; the second, woken while it leads, leaves its event to the leader."""
    settings.AUDIT_SEALER = "off"
    settings.AUDIT_SEAL_INTERVAL_SECONDS = 0.3
    tenant = scratch_org.tenant
    first, second = sealing._Sealer(), sealing._Sealer()
    try:
        _committed(tenant, 1, action="test.first")
        first.wake(tenant)
        deadline = time.monotonic() + 10
        while not _sealed(tenant, "test.first"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert tenant.schema_name in first._leading
        _committed(tenant, 1, action="test.second")
        second.wake(tenant)
        while not _sealed(tenant, "test.second"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert second._leading == {}  # it found the lead taken and left the sealing to it
        while first._leading:  # three passes with nothing to seal: it lets go
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with context.tenant_context(tenant), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_try_advisory_lock(%s, hashtext(current_schema())),"
                " pg_advisory_unlock(%s, hashtext(current_schema()))",
                [sealing.LEADER_LOCK_CLASS, sealing.LEADER_LOCK_CLASS],
            )
            assert cursor.fetchone() == (True, True)  # the lead is free again
            assert verify_chain(tenant_id=str(tenant.public_id)).is_intact
    finally:
        first.stop()
        second.stop()


def test_a_leader_letting_go_leads_again_while_events_are_unsealed(scratch_org, settings):
    """A commit seen by a process that found this one leading, just before it let go, is sealed:
    letting go checks for unsealed events afterwards and takes the lead again."""
    settings.AUDIT_SEALER = "off"
    tenant = scratch_org.tenant
    try:
        assert sealing._leader_call(tenant, sealing._TAKE_LEAD)
        _committed(tenant, 1)

        assert sealing._leader_call(tenant, sealing._LET_GO) is True  # unsealed: leads again
        with context.tenant_context(tenant):
            sealing.seal_pass()
        assert sealing._leader_call(tenant, sealing._LET_GO) is False  # nothing left: let go
    finally:
        connection.close()  # no leader lock left behind


def test_a_follower_tries_the_lead_again_only_intervals_later(scratch_org, settings, monkeypatch):
    """A sealer that found the lead taken does not try it again at every wake-up (the leader
    seals its commits meanwhile), only FOLLOWER_INTERVALS intervals later: then, the leader gone,
    it takes the lead and seals what was committed since."""
    settings.AUDIT_SEALER = "off"
    settings.AUDIT_SEAL_INTERVAL_SECONDS = 0.05
    window = sealing.FOLLOWER_INTERVALS * 0.05
    tenant = scratch_org.tenant
    leader_call, tries = sealing._leader_call, []

    def counted(tenant, statements):
        if statements is sealing._TAKE_LEAD:
            tries.append(time.monotonic())
        return leader_call(tenant, statements)

    monkeypatch.setattr(sealing, "_leader_call", counted)
    follower = sealing._Sealer()
    try:
        assert leader_call(tenant, sealing._TAKE_LEAD)  # this thread's connection leads
        deadline = time.monotonic() + 10
        for _ in range(5):  # woken five times in about one window
            _committed(tenant, 1, action="test.followed")
            follower.wake(tenant)
            while not tries:
                assert time.monotonic() < deadline
                time.sleep(0.005)
            time.sleep(window / 5)
        assert not follower._leading
        assert not _sealed(tenant, "test.followed")  # the leader here never seals

        # The leader goes, sealing nothing (a real one seals what it sees unsealed first); a
        # commit after that is the follower's to seal, at its next try.
        assert leader_call(tenant, sealing._LET_GO[:1])
        _committed(tenant, 1, action="test.handed-over")
        follower.wake(tenant)
        while not _sealed(tenant, "test.handed-over"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert _sealed(tenant, "test.followed")
        assert tenant.schema_name in follower._leading
        assert len(tries) >= 2
        assert all(later - earlier >= window for earlier, later in zip(tries, tries[1:]))
        with context.tenant_context(tenant):
            assert verify_chain(tenant_id=str(tenant.public_id)).is_intact
    finally:
        follower.stop()
        connection.close()  # no leader lock left behind
