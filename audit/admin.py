"""Staff admin on the public host: the platform's own audit log, read-only."""

from __future__ import annotations

import json

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """The public schema's log (staff actions, provisioning). Nobody adds, edits or deletes."""

    list_display = [
        "sequence",
        "occurred_at",
        "actor_label",
        "actor_kind",
        "action",
        "resource_type",
        "resource_id",
        "result",
    ]
    list_filter = ["result"]
    search_fields = ["=action", "=actor_label", "=resource_id"]
    ordering = ["-sequence"]
    show_full_result_count = False
    list_per_page = 50
    fields = [
        "sequence",
        "occurred_at",
        "tenant_id",
        "actor_kind",
        "actor_id",
        "actor_label",
        "ip",
        "user_agent",
        "action",
        "resource_type",
        "resource_id",
        "result",
        "details_pretty",
        "previous_hash",
        "hash",
    ]
    readonly_fields = fields

    @admin.display(description="details")
    def details_pretty(self, event: AuditEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(event.details, indent=2, sort_keys=True))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def get_actions(self, request: HttpRequest) -> dict:
        return {}
