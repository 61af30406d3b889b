"""In the organization's schema: its data key state, its secrets and its knowledge documents.

The data keys themselves are not here (vault.keystore keeps them wrapped, outside the database);
`KeyState` only says which version encrypts new writes and how a rotation is getting on.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models.functions import Lower

from core.tool_permissions import SECRET_NAME_PATTERN
from vault.fields import EncryptedTextField

SINGLETON_PK = 1


class KeyState(models.Model):
    """One row (pk=1): the active data key version and the latest rotation's progress."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON_PK)
    active_version = models.PositiveIntegerField(default=0, help_text="0: no key made yet.")
    rotation_started_at = models.DateTimeField(null=True, blank=True)
    rotation_finished_at = models.DateTimeField(null=True, blank=True)
    rotation_heartbeat_at = models.DateTimeField(null=True, blank=True)
    rotated_by = models.CharField(max_length=254, blank=True)
    rows_total = models.PositiveIntegerField(default=0)
    rows_done = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(id=SINGLETON_PK), name="keystate_singleton")
        ]

    def __str__(self) -> str:
        return f"data key v{self.active_version}"

    @property
    def is_rotating(self) -> bool:
        return self.rotation_started_at is not None and self.rotation_finished_at is None

    @property
    def progress_percent(self) -> int:
        if not self.rows_total:
            return 100 if not self.is_rotating else 0
        return min(100, self.rows_done * 100 // self.rows_total)


class Secret(models.Model):
    """A named secret. The value (and its last four characters, for the masked view) are
    encrypted; nothing ever reads the value back out but an attached agent that references it,
    or a custom tool's run granted `secrets:<name>` (vault.services.secret_tool_read)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=64)
    value = EncryptedTextField()
    hint = EncryptedTextField(help_text="The value's last four characters.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.CharField(max_length=254, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(Lower("name"), name="secret_name_unique_ci"),
            models.CheckConstraint(
                condition=models.Q(name__regex=SECRET_NAME_PATTERN), name="secret_name_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<Secret {self.name}>"

    @property
    def masked(self) -> str:
        return "••••" + self.hint


class Classification(models.TextChoices):
    """How sensitive a piece of data is; each class has its retention (settings.DATA_RETENTION_DAYS,
    applied by `manage.py data_retention`)."""

    GENERAL = "general", "General"
    CONFIDENTIAL = "confidential", "Confidential"
    RESTRICTED = "restricted", "Restricted"


class KnowledgeDocument(models.Model):
    """A document the organization's agents may read: title and tags in clear (for listing and
    search), the text encrypted."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    title = models.CharField(max_length=200)
    tags = models.JSONField(default=list, blank=True)
    text = EncryptedTextField()
    classification = models.CharField(
        max_length=16, choices=Classification.choices, default=Classification.GENERAL
    )
    size = models.PositiveIntegerField(default=0, help_text="Characters of text.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.CharField(max_length=254, blank=True)

    class Meta:
        ordering = ["title"]
        indexes = [
            models.Index(Lower("title"), name="knowledge_title_lower_idx"),
            models.Index(
                fields=["classification", "updated_at"], name="knowledge_class_updated_idx"
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(classification__in=Classification.values),
                name="knowledge_classification_valid",
            )
        ]

    def __str__(self) -> str:
        return self.title
