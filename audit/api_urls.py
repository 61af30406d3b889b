"""API routes of the audit log, under /api/v1/."""

from django.urls import path

from audit import api

app_name = "audit_api"

urlpatterns = [
    path("audit/events/", api.AuditEventListApi.as_view(), name="event-list"),
    path("audit/export", api.AuditExportApi.as_view(), name="event-export"),
]
