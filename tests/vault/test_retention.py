"""Data classification and retention per class (manage.py data_retention)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from audit.models import AuditEvent
from core.actors import Actor
from tenants import context
from vault import retention, services
from vault.models import KnowledgeDocument

SYSTEM = Actor.system("tests")


def aged(title: str, classification: str, days: int) -> KnowledgeDocument:
    document = services.knowledge_create(
        actor=SYSTEM, title=title, text="t", classification=classification
    )
    KnowledgeDocument.objects.filter(pk=document.pk).update(
        updated_at=timezone.now() - timedelta(days=days)
    )
    return document


def test_each_class_keeps_documents_for_its_own_time(acme, settings):
    settings.DATA_RETENTION_DAYS = {"general": None, "confidential": 30, "restricted": 7}
    aged("old general", "general", 1000)
    aged("old confidential", "confidential", 31)
    aged("young confidential", "confidential", 29)
    aged("old restricted", "restricted", 8)
    aged("young restricted", "restricted", 6)

    removed = retention.data_retention_apply(actor=SYSTEM)

    assert removed == {"confidential": 1, "restricted": 1}
    assert sorted(KnowledgeDocument.objects.values_list("title", flat=True)) == [
        "old general",
        "young confidential",
        "young restricted",
    ]
    (event,) = AuditEvent.objects.filter(action="data.retention_applied")
    assert event.details["removed"] == {"confidential": 1, "restricted": 1}


def test_the_command_visits_every_organization_and_only_its_own_rows(org, other_org, settings):
    settings.DATA_RETENTION_DAYS = {"general": None, "confidential": None, "restricted": 7}
    with context.tenant_context(org.tenant):
        aged("acme secret plan", "restricted", 10)
    with context.tenant_context(other_org.tenant):
        aged("globex fresh", "restricted", 1)

    call_command("data_retention")

    with context.tenant_context(org.tenant):
        assert not KnowledgeDocument.objects.exists()
    with context.tenant_context(other_org.tenant):
        assert KnowledgeDocument.objects.count() == 1


def test_only_staff_or_the_system_applies_retention(org):
    from django.core.exceptions import PermissionDenied

    with context.tenant_context(org.tenant), pytest.raises(PermissionDenied):
        retention.data_retention_apply(actor=Actor.for_user(org.owner))


def test_a_document_carries_its_classification_over_the_api(org, client_for):
    from tests.credentials.helpers import bearer, token_pair
    from tests.vault.test_api import call

    client = client_for(org)
    headers = bearer(token_pair(org, org.member).access)

    created = call(
        client,
        "post",
        "/api/v1/knowledge/",
        {"title": "Salaries", "text": "...", "classification": "restricted"},
        **headers,
    )
    bad = call(
        client,
        "post",
        "/api/v1/knowledge/",
        {"title": "X", "text": "...", "classification": "top-secret"},
        **headers,
    )

    assert (created.status_code, created.json()["classification"]) == (201, "restricted")
    assert bad.status_code == 400
    listed = call(client, "get", "/api/v1/knowledge/", **headers).json()["results"]
    assert listed[0]["classification"] == "restricted"
