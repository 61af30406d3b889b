"""The audit API: the events list (keyset-paginated) and the streamed export."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response

from audit import exports, selectors
from audit.models import AuditEvent, Result
from audit.selectors import ACTOR_KINDS, EventFilters
from audit.views import export_response
from core.api import ApiView


class AuditEventSerializer(serializers.Serializer):
    """One event, in the same shape (and field names) as the JSON export and the hash input."""

    tenant_id = serializers.CharField(help_text="The organization's public id.")
    sequence = serializers.IntegerField(help_text="Position in the organization's chain.")
    occurred_at = serializers.DateTimeField()
    actor_kind = serializers.ChoiceField(choices=ACTOR_KINDS)
    actor_id = serializers.CharField()
    actor_label = serializers.CharField(help_text="A user's email, an API key's name ...")
    action = serializers.CharField()
    resource_type = serializers.CharField()
    resource_id = serializers.CharField()
    result = serializers.ChoiceField(choices=Result.values)
    ip = serializers.IPAddressField(allow_null=True)
    user_agent = serializers.CharField()
    details = serializers.JSONField()
    previous_hash = serializers.CharField()
    hash = serializers.CharField(help_text="SHA-256 of the event's canonical form.")

    def to_representation(self, instance: AuditEvent) -> dict[str, Any]:
        return exports.event_record(instance)


class AuditEventPageSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True, help_text="The next (older) page, if any.")
    next_cursor = serializers.CharField(allow_null=True)
    results = AuditEventSerializer(many=True)


FILTER_PARAMETERS = [
    OpenApiParameter("actor", str, description="The actor's label (a user's email ...)."),
    OpenApiParameter("actor_id", str),
    OpenApiParameter("actor_kind", str, enum=list(ACTOR_KINDS)),
    OpenApiParameter("action", str, description="For example `member.role_changed`."),
    OpenApiParameter("resource_type", str),
    OpenApiParameter("resource_id", str),
    OpenApiParameter("result", str, enum=Result.values),
    OpenApiParameter("start", OpenApiTypes.DATETIME, description="Inclusive; ISO 8601 (UTC)."),
    OpenApiParameter("end", OpenApiTypes.DATETIME, description="Exclusive; ISO 8601 (UTC)."),
]


class AuditEventListApi(ApiView):
    """The organization's audit events, newest first, filtered, with a keyset cursor.

    No total count: at millions of rows it would cost more than the page. Follow `next`.
    """

    required = {"GET": "audit:read"}

    @extend_schema(
        tags=["audit"],
        summary="List audit events",
        parameters=[
            *FILTER_PARAMETERS,
            OpenApiParameter(
                "cursor",
                {"type": "string", "pattern": selectors.CURSOR_PATTERN},
                description="`next_cursor` of the previous page.",
            ),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": selectors.MAX_PAGE_SIZE},
                description=f"Default {selectors.DEFAULT_PAGE_SIZE}.",
            ),
        ],
        responses={200: AuditEventPageSerializer},
    )
    def get(self, request: Request) -> Response:
        filters = EventFilters.from_params(request.query_params, strict=True)
        cursor = selectors.parse_cursor(request.query_params.get("cursor"))
        limit = selectors.parse_limit(request.query_params.get("limit"))
        page = selectors.event_list(actor=self.actor, filters=filters, cursor=cursor, limit=limit)
        next_url = None
        if page.next_cursor is not None:
            query = {**filters.as_params(), "cursor": page.next_cursor}
            if limit != selectors.DEFAULT_PAGE_SIZE:
                query["limit"] = limit
            next_url = request.build_absolute_uri(request.path) + "?" + urlencode(query)
        return Response(
            {
                "next": next_url,
                "next_cursor": str(page.next_cursor) if page.next_cursor is not None else None,
                "results": AuditEventSerializer(page.events, many=True).data,
            }
        )


class _FormatIsNotARenderer(DefaultContentNegotiation):
    """`?format=` names the export's format here, not one of DRF's renderers."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class AuditExportApi(ApiView):
    """Download the log (or a filtered part), oldest first, streamed in constant memory.

    `json` is one JSON array with an event per line; `csv` has a header row and escapes cells a
    spreadsheet would run as formulas with a leading apostrophe; `cef` is ArcSight CEF, one line
    per event. The export is itself recorded (`audit.exported`) before the first byte is sent.
    """

    required = {"GET": "audit:read"}
    content_negotiation_class = _FormatIsNotARenderer

    @extend_schema(
        tags=["audit"],
        summary="Export audit events",
        parameters=[
            OpenApiParameter("format", str, enum=list(exports.FORMATS), required=True),
            *FILTER_PARAMETERS,
        ],
        responses={
            (200, "application/json"): OpenApiResponse(
                response=AuditEventSerializer(many=True), description="A JSON array of events."
            ),
            (200, "text/csv"): OpenApiResponse(
                response=OpenApiTypes.STR, description="CSV with a header row."
            ),
            (200, "text/plain"): OpenApiResponse(
                response=OpenApiTypes.STR, description="CEF, one event per line."
            ),
        },
    )
    def get(self, request: Request):
        filters = EventFilters.from_params(request.query_params, strict=True)
        recorded = exports.audit_log_export(
            actor=self.actor, format=request.query_params.get("format", ""), filters=filters
        )
        return export_response(request._request, recorded)
