"""Vault benchmarks: reading 50 knowledge documents with their encrypted text beside the same 50
rows in a plain twin table (the floor), and data key rotation throughput (rows per second).

    .venv/bin/python bench/vault_bench.py [--rounds 40] [--rows 2000]

Runs in a process of its own against `$BENCH_DATABASE_PREFIX_vault` (created and migrated on
first use), with a keystore directory and master key of its own under a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    PYTHON,
    ROOT,
    database_url,
    django_env,
    ensure_database,
    machine_facts,
    median,
)

RESULTS = ROOT / "bench" / "results" / "vault.json"

BODY = r"""
import base64, json, os, secrets, sys, time
import django
django.setup()
from django.db import connection, models
from core.actors import Actor
from organizations import services as organizations
from tenants import context
from tenants.models import Tenant
from vault import keys, services
from vault.models import KnowledgeDocument

ROUNDS, ROWS = int(sys.argv[1]), int(sys.argv[2])
actor = Actor.system("bench")
slug = "vault-bench"
with context.public_context():
    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is not None:
        organizations.tenant_delete(actor=actor, tenant=tenant)
    tenant = organizations.provision_tenant(
        actor=actor, slug=slug, name="Vault bench", owner_email="owner@vault-bench.test",
        owner_password="bench-password-correct-horse", plan_slug="enterprise",
    )


class PlainDocument(models.Model):
    # The floor: the same columns, the text in clear.
    id = models.UUIDField(primary_key=True)
    title = models.CharField(max_length=200)
    tags = models.JSONField(default=list)
    text = models.TextField()
    classification = models.CharField(max_length=16)
    size = models.PositiveIntegerField()
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    updated_by = models.CharField(max_length=254)

    class Meta:
        app_label = "vault"
        db_table = "bench_plain_document"
        managed = False


text = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 36  # ~2 KB
results = {}
with context.tenant_context(tenant):
    with connection.schema_editor() as editor:
        editor.create_model(PlainDocument)
    for number in range(50):
        document = services.knowledge_create(
            actor=actor, title=f"Document {number:02d}", text=text, tags=["bench"]
        )
        PlainDocument.objects.create(
            id=document.pk, title=document.title, tags=document.tags, text=text,
            classification="general", size=len(text), created_at=document.created_at,
            updated_at=document.updated_at, updated_by="bench",
        )

    from vault.api import KnowledgeSummarySerializer
    from vault import selectors

    owner = Actor.system("bench")

    def listing():
        # What GET /api/v1/knowledge/ does for a page of 50: the selector, then the serializer.
        page = list(selectors.knowledge_list(actor=owner)[:50])
        return len(KnowledgeSummarySerializer(page, many=True).data)

    def listing_plain():
        page = list(PlainDocument.objects.defer("text").order_by("title", "pk")[:50])
        return len(KnowledgeSummarySerializer(page, many=True).data)

    def with_text():
        rows = list(KnowledgeDocument.objects.order_by("title")[:50])
        return sum(len(row.text) for row in rows)

    def with_text_plain():
        rows = list(PlainDocument.objects.order_by("title")[:50])
        return sum(len(row.text) for row in rows)

    pairs = {"list": (listing, listing_plain), "read": (with_text, with_text_plain)}
    for first, second in pairs.values():  # warm-up
        first(), second()
    for name, (encrypted, plain) in pairs.items():
        samples = {"encrypted": [], "plain": []}
        for round_number in range(ROUNDS):
            order = [(encrypted, "encrypted"), (plain, "plain")]
            for variant, label in order if round_number % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                variant()
                samples[label].append((time.perf_counter() - start) * 1000)
        results[name] = samples

    # Rotation throughput: ROWS documents (plus the 50), all re-encrypted under a new version.
    for number in range(ROWS):
        KnowledgeDocument(title=f"Row {number}", text=text[:500]).save()
    services.reencrypt_in_background = lambda tenant: None  # the bench runs the worker itself
    state = services.data_key_rotate(actor=actor)
    start = time.perf_counter()
    assert services.reencrypt_run() is True
    elapsed = time.perf_counter() - start
    results["rotation"] = {"rows": state.rows_total, "seconds": elapsed}
with context.public_context():
    organizations.tenant_delete(actor=actor, tenant=tenant)
print(json.dumps(results))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--rows", type=int, default=2000)
    options = parser.parse_args()
    database = database_url("vault")
    ensure_database(database)
    subprocess.run(
        [PYTHON, "manage.py", "migrate_schemas", "--shared", "-v0"],
        cwd=ROOT,
        env=django_env(database),
        check=True,
    )
    with tempfile.TemporaryDirectory(prefix="vault-bench-") as directory:
        master = subprocess.run(
            [PYTHON, "-c", "import base64,os;print(base64.b64encode(os.urandom(32)).decode())"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        env = django_env(
            database,
            AGENTPLANE_MASTER_KEY=master,
            AGENTPLANE_KEYSTORE_DIR=os.path.join(directory, "keystore"),
        )
        output = subprocess.run(
            [PYTHON, "-c", BODY, str(options.rounds), str(options.rows)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
    if output.returncode != 0:
        print(output.stderr[-4000:])
        sys.exit(1)
    results = json.loads(output.stdout.strip().splitlines()[-1])
    figures = {}
    for name in ("list", "read"):
        samples = results[name]
        ratios = [e / p for e, p in zip(samples["encrypted"], samples["plain"], strict=True)]
        figures[name] = (median(samples["encrypted"]), median(samples["plain"]), median(ratios))
    rotation = results["rotation"]
    summary = {
        "machine": machine_facts(database),
        "rounds": options.rounds,
        **{
            f"{name}50_{label}": round(value, 3)
            for name, values in figures.items()
            for label, value in zip(("encrypted_ms", "plain_ms", "ratio"), values, strict=True)
        },
        "rotation_rows": rotation["rows"],
        "rotation_seconds": round(rotation["seconds"], 3),
        "rotation_rows_per_second": round(rotation["rows"] / rotation["seconds"], 1),
        "samples": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=1))
    for name, (encrypted, plain, ratio) in figures.items():
        print(
            f"{name} 50 documents: encrypted {encrypted:.2f} ms, plain {plain:.2f} ms "
            f"(median of per-round ratios {ratio:.3f})"
        )
    print(
        f"rotation: {rotation['rows']} rows in {rotation['seconds']:.2f} s = "
        f"{summary['rotation_rows_per_second']} rows/s"
    )


if __name__ == "__main__":
    main()
