"""Data key rotation: new writes use the new key at once, old rows are re-encrypted in the
background with progress, reads never fail meanwhile, a killed run resumes; master key rotation."""

from __future__ import annotations

import threading
import time

import pytest
from django.core.management import call_command
from django.db import connection

from audit.models import AuditEvent
from core.actors import Actor
from tenants import context
from vault import keys, keystore, services
from vault.models import KnowledgeDocument, Secret

SYSTEM = Actor.system("tests")


def owner_of(org) -> Actor:
    return Actor.for_user(org.owner)


def versions_on_disk(table: str, column: str) -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT split_part({column}, '$', 2), count(*) FROM {table} GROUP BY 1")
        return dict(cursor.fetchall())


@pytest.fixture
def rotated_by_hand(monkeypatch):
    """The rotation's background worker is not started: the test runs the re-encryption."""
    started = []
    monkeypatch.setattr(services, "reencrypt_in_background", lambda tenant: started.append(tenant))
    return started


def test_new_writes_use_the_new_key_at_once_and_old_rows_still_read(scratch_org, rotated_by_hand):
    with context.tenant_context(scratch_org.tenant):
        first, _ = services.secret_set(actor=SYSTEM, name="OLD_ONE", value="old-value-123456")
        state = services.data_key_rotate(actor=owner_of(scratch_org))
        second, _ = services.secret_set(actor=SYSTEM, name="NEW_ONE", value="new-value-123456")

        assert state.active_version == 2
        assert state.rows_total == 1  # one row, both its columns under the old version
        assert versions_on_disk("vault_secret", "value") == {"1": 1, "2": 1}
        assert Secret.objects.get(pk=first.pk).value == "old-value-123456"
        assert Secret.objects.get(pk=second.pk).value == "new-value-123456"
        assert len(rotated_by_hand) == 1
        assert keystore.store().versions(owner=keys.owner()) == [1, 2]


def test_a_rotation_killed_halfway_resumes_with_nothing_lost(scratch_org, rotated_by_hand):
    with context.tenant_context(scratch_org.tenant):
        for number in range(450):
            KnowledgeDocument(title=f"Doc {number}", text=f"text {number}").save()
        services.secret_set(actor=SYSTEM, name="KEPT", value="kept-value-1234567")
        state = services.data_key_rotate(actor=owner_of(scratch_org))
        assert state.rows_total == 451

        finished = services.reencrypt_run(max_batches=1)  # then "killed"

        assert finished is False
        halfway = keys.state()
        assert (halfway.is_rotating, halfway.rows_done) == (True, 200)
        assert services.rotation_is_stalled(halfway) is False  # it reported a moment ago
        assert versions_on_disk("vault_knowledgedocument", "text") == {"1": 251, "2": 199}

    call_command("reencrypt", "--tenant", scratch_org.tenant.slug)

    with context.tenant_context(scratch_org.tenant):
        done = keys.state()
        assert (done.is_rotating, done.rows_done, done.progress_percent) == (False, 451, 100)
        assert versions_on_disk("vault_knowledgedocument", "text") == {"2": 450}
        assert versions_on_disk("vault_secret", "hint") == {"2": 1}
        texts = sorted(d.text for d in KnowledgeDocument.objects.all())
        assert texts == sorted(f"text {number}" for number in range(450))
        assert Secret.objects.get(name="KEPT").value == "kept-value-1234567"
        actions = list(
            AuditEvent.objects.filter(action__startswith="data_key.")
            .order_by("sequence")
            .values_list("action", flat=True)
        )
        assert actions == ["data_key.rotated", "data_key.rotation_finished"]


def test_a_second_rotation_waits_for_the_first(scratch_org, rotated_by_hand):
    with context.tenant_context(scratch_org.tenant):
        services.secret_set(actor=SYSTEM, name="ONE", value="one-value-12345678")
        services.data_key_rotate(actor=owner_of(scratch_org))

        with pytest.raises(services.Conflict) as raised:
            services.data_key_rotate(actor=owner_of(scratch_org))

        assert raised.value.code == "rotation_in_progress"
        assert keys.state().active_version == 2


def test_rotation_under_concurrent_reads_and_writes_loses_nothing(scratch_org, rotated_by_hand):
    tenant = scratch_org.tenant
    with context.tenant_context(tenant):
        for number in range(300):
            KnowledgeDocument(title=f"Doc {number}", text=f"original {number}").save()
        ids = list(KnowledgeDocument.objects.order_by("title").values_list("pk", flat=True))
        services.data_key_rotate(actor=owner_of(scratch_org))

    failures: list[BaseException] = []
    written: dict = {}
    stop = threading.Event()

    def reader() -> None:
        try:
            with context.tenant_context(tenant):
                while not stop.is_set():
                    for document in KnowledgeDocument.objects.order_by("?")[:20]:
                        assert document.text.startswith(("original", "rewritten"))
        except BaseException as error:  # noqa: BLE001
            failures.append(error)
        finally:
            connection.close()

    def writer() -> None:
        try:
            with context.tenant_context(tenant):
                for number, pk in enumerate(ids[::7]):
                    services.knowledge_update(
                        actor=SYSTEM, document_id=pk, text=f"rewritten {number}"
                    )
                    written[pk] = f"rewritten {number}"
        except BaseException as error:  # noqa: BLE001
            failures.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=reader) for _ in range(2)] + [
        threading.Thread(target=writer)
    ]
    for thread in threads:
        thread.start()

    def rotate() -> None:
        try:
            with context.tenant_context(tenant):
                assert services.reencrypt_run() is True
        finally:
            connection.close()

    rotation = threading.Thread(target=rotate)
    rotation.start()
    rotation.join(60)
    threads[-1].join(60)
    stop.set()
    for thread in threads:
        thread.join(10)

    assert failures == []
    with context.tenant_context(tenant):
        assert keys.state().is_rotating is False
        assert versions_on_disk("vault_knowledgedocument", "text") == {"2": 300}
        for document in KnowledgeDocument.objects.all():
            expected = written.get(document.pk, f"original {document.title.split()[1]}")
            assert document.text == expected


def test_the_background_worker_finishes_a_rotation(scratch_org):
    with context.tenant_context(scratch_org.tenant):
        services.secret_set(actor=SYSTEM, name="BG", value="background-value-1")
        services.data_key_rotate(actor=owner_of(scratch_org))
        deadline = time.monotonic() + 20
        while keys.state().is_rotating and time.monotonic() < deadline:
            time.sleep(0.1)
        assert keys.state().is_rotating is False
        assert versions_on_disk("vault_secret", "value") == {"2": 1}


def test_the_owner_rotates_from_the_settings_page(scratch_org, client_for, rotated_by_hand):
    client = client_for(scratch_org, scratch_org.owner)

    response = client.post("/settings/data-key/rotate/")
    page = client.get("/settings/")

    assert response.status_code == 302
    assert "v2" in page.text
    assert 'data-rotation-progress="' in page.text


def test_master_key_rotation_rewraps_every_data_key_and_reads_keep_working(
    scratch_org, tmp_path, settings
):
    key_file = tmp_path / "master_key"
    key_file.write_text("\n".join(m.key.hex() for m in []) or "")
    # Start from the session's current master key, in a key file of the test's own.
    import base64

    current = keystore.load_master_keys()[0]
    key_file.write_text(base64.b64encode(current.key).decode() + "\n")
    settings.VAULT_MASTER_KEY_FILE = str(key_file)
    keystore.reset()
    with context.tenant_context(scratch_org.tenant):
        services.secret_set(actor=SYSTEM, name="MASTERED", value="under-the-old-master")
        owner = keys.owner()

    try:
        call_command("rotate_master_key", "--generate")
        keystore.reset()
        new = keystore.load_master_keys()[0]
        assert new.id != current.id
        entries = keystore.store()._read(owner)
        assert {entry["master"] for entry in entries.values()} == {new.id}
        with context.tenant_context(scratch_org.tenant):
            assert Secret.objects.get(name="MASTERED").value == "under-the-old-master"

        call_command("rotate_master_key", "--retire-previous")
        keystore.reset()
        assert [m.id for m in keystore.load_master_keys()] == [new.id]
        with context.tenant_context(scratch_org.tenant):
            assert Secret.objects.get(name="MASTERED").value == "under-the-old-master"
        with context.public_context():
            assert AuditEvent.objects.filter(action="master_key.rotated").count() == 2
    finally:
        # Other organizations' keys are still under the session's key: put it back first.
        key_file.write_text(base64.b64encode(current.key).decode() + "\n" + key_file.read_text())
        call_command("rotate_master_key")
        keystore.reset()
