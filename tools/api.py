"""The API of custom tools, under /api/v1/: tools (versioned on save), their versions, runs, and
an agent's runs of the tools it lists (what the reference runtime calls)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from core import tool_permissions
from core.api import (
    NOT_BLANK,
    ApiView,
    ErrorSerializer,
    InputSerializer,
    JsonObjectField,
    Pagination,
    PatternField,
    TextField,
    paginated,
)
from tools import selectors, services
from tools.models import Tool, ToolVersion

TOOL_NAME_PATTERN = r"^[a-z][a-z0-9_.-]{0,63}$"


class ToolInputSerializer(InputSerializer):
    """What a client may send; the service checks the values against the plan (all errors)."""

    name = PatternField(TOOL_NAME_PATTERN, max_length=64)
    description = TextField(required=False, allow_blank=True, allow_null=True, max_length=2000)
    input_schema = JsonObjectField(
        required=False, help_text="A JSON Schema (2020-12) object; `pattern` is not supported."
    )
    code = PatternField(
        NOT_BLANK,
        trim_whitespace=False,
        max_length=64 * 1024,
        help_text="JavaScript defining `function run(input, api)` (may be async).",
    )
    timeout_ms = serializers.IntegerField(
        required=False, min_value=1, max_value=600_000, help_text="At most the plan's maximum."
    )
    memory_mb = serializers.IntegerField(
        required=False, min_value=8, max_value=4096, help_text="At most the plan's maximum."
    )
    permissions = serializers.ListField(
        child=serializers.RegexField(tool_permissions.TOOL_PERMISSION_PATTERN, max_length=72),
        required=False,
        max_length=tool_permissions.MAX_TOOL_PERMISSIONS,
        help_text=(
            "Host API permissions; the plan must allow them. `secrets:NAME` grants "
            '`api.secret("NAME")` for an existing secret (needs `secrets:write`, as does any '
            f"new version of a tool holding one; at most {tool_permissions.MAX_SECRETS_PER_TOOL})."
        ),
    )


class ToolSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    description = serializers.CharField()
    version = serializers.IntegerField(help_text="The current version.")
    code = serializers.CharField()
    input_schema = serializers.JSONField()
    timeout_ms = serializers.IntegerField()
    memory_mb = serializers.IntegerField()
    permissions = serializers.ListField(
        child=serializers.RegexField(tool_permissions.TOOL_PERMISSION_PATTERN)
    )
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    created_by = serializers.CharField()


class ToolVersionSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    code = serializers.CharField()
    input_schema = serializers.JSONField()
    timeout_ms = serializers.IntegerField()
    memory_mb = serializers.IntegerField()
    permissions = serializers.ListField(child=serializers.CharField())
    created_at = serializers.DateTimeField()
    created_by = serializers.CharField()


class RunInputSerializer(InputSerializer):
    input = serializers.JSONField(help_text="The tool's input; checked against its input_schema.")
    version = serializers.IntegerField(
        required=False, min_value=1, help_text="A saved version (default: the current one)."
    )


class AgentRunInputSerializer(InputSerializer):
    input = serializers.JSONField(help_text="The tool's input; checked against its input_schema.")


class RunErrorSerializer(serializers.Serializer):
    message = serializers.CharField()
    stack = serializers.CharField(allow_blank=True)
    code = serializers.CharField(required=False)


class RunSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=list(services.RUN_STATUSES))
    output = serializers.JSONField(allow_null=True, help_text="run()'s return value (ok only).")
    logs = serializers.ListField(
        child=serializers.CharField(allow_blank=True), help_text="console.log lines (capped)."
    )
    duration_ms = serializers.FloatField()
    memory_bytes = serializers.IntegerField()
    version = serializers.IntegerField()
    error = RunErrorSerializer(required=False, help_text="Absent when status is ok.")


def _tool_data(tool: Tool, version: ToolVersion | None = None) -> dict[str, Any]:
    version = version or selectors.version_get(tool=tool)
    return {
        "id": tool.pk,
        "name": tool.name,
        "description": tool.description,
        "version": tool.version,
        "code": version.code,
        "input_schema": version.input_schema,
        "timeout_ms": version.timeout_ms,
        "memory_mb": version.memory_mb,
        "permissions": version.permissions,
        "created_at": tool.created_at,
        "updated_at": tool.updated_at,
        "created_by": tool.created_by,
    }


RUN_RESPONSES = {
    200: RunSerializer,
    400: ErrorSerializer,
    404: ErrorSerializer,
    429: OpenApiResponse(
        ErrorSerializer,
        description="`concurrency_limit`: retry shortly; `quota_exceeded`: a hard monthly quota "
        "on tool runs (`tool_runs_per_month`) or on their CPU time (`tool_cpu_ms_per_month`) is "
        "used up, the run did not start (`detail.quota` names it; `Retry-After` is the month's "
        "end); `rate_limited`.",
    ),
    503: OpenApiResponse(ErrorSerializer, description="`sandbox_busy`: retry shortly."),
}


class ToolListApi(ApiView):
    """The organization's custom tools."""

    required = {"GET": "tools:read", "POST": "tools:write"}

    @extend_schema(tags=["tools"], responses={200: paginated(ToolSerializer)}, summary="List tools")
    def get(self, request: Request) -> Response:
        paginator = Pagination()
        page = paginator.paginate_queryset(selectors.tool_list(actor=self.actor), request, self)
        versions = selectors.current_versions(page or [])
        rows = [_tool_data(tool, versions[tool.pk]) for tool in page or []]
        return paginator.get_paginated_response(ToolSerializer(rows, many=True).data)

    @extend_schema(
        tags=["tools"],
        request=ToolInputSerializer,
        responses={201: ToolSerializer, 400: ErrorSerializer},
        summary="Write a tool (version 1); the code is compile-checked",
    )
    def post(self, request: Request) -> Response:
        data = ToolInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        tool = services.tool_create(actor=self.actor, **data.validated_data)
        return Response(_tool_data(tool), status=status.HTTP_201_CREATED)


class ToolDetailApi(ApiView):
    """One custom tool, with its current version's code, schema, limits and permissions."""

    required = {"GET": "tools:read", "PATCH": "tools:write", "DELETE": "tools:write"}

    @extend_schema(tags=["tools"], responses={200: ToolSerializer}, summary="Get a tool")
    def get(self, request: Request, tool_id: Any) -> Response:
        return Response(_tool_data(selectors.tool_get(actor=self.actor, tool_id=tool_id)))

    @extend_schema(
        tags=["tools"],
        request=ToolInputSerializer,
        responses={200: ToolSerializer, 400: ErrorSerializer},
        summary="Change a tool (a new version when code, schema, limits or permissions change)",
    )
    def patch(self, request: Request, tool_id: Any) -> Response:
        data = ToolInputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        tool = services.tool_update(actor=self.actor, tool_id=tool_id, **data.validated_data)
        return Response(_tool_data(tool))

    @extend_schema(
        tags=["tools"],
        responses={204: OpenApiResponse(description="Deleted, with its versions.")},
        summary="Delete a tool",
    )
    def delete(self, request: Request, tool_id: Any) -> Response:
        services.tool_delete(actor=self.actor, tool_id=tool_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ToolVersionListApi(ApiView):
    """A tool's saved versions (never edited)."""

    required = {"GET": "tools:read"}

    @extend_schema(
        tags=["tools"],
        responses={200: paginated(ToolVersionSerializer)},
        summary="List a tool's versions, newest first",
    )
    def get(self, request: Request, tool_id: Any) -> Response:
        tool = selectors.tool_get(actor=self.actor, tool_id=tool_id)
        versions = selectors.version_list(actor=self.actor, tool=tool)
        return self.paginated_response(versions, ToolVersionSerializer)


class ToolRunApi(ApiView):
    """Run a tool in the sandbox: a V8 isolate in a worker process, within its limits."""

    required = {"POST": "tools:run"}

    @extend_schema(
        tags=["tools"],
        request=RunInputSerializer,
        responses=RUN_RESPONSES,
        summary="Run a tool (its current version unless `version` is given)",
    )
    def post(self, request: Request, tool_id: Any) -> Response:
        data = RunInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = services.tool_run(
            actor=self.actor,
            tool_id=tool_id,
            input=data.validated_data["input"],
            version=data.validated_data.get("version"),
        )
        return Response(result.as_dict())


class AgentToolRunApi(ApiView):
    """What an agent's runtime calls: one of the agent's tools, by name."""

    required = {"POST": "tools:run"}

    @extend_schema(
        tags=["tools"],
        request=AgentRunInputSerializer,
        responses=RUN_RESPONSES,
        summary="Run one of an agent's tools by name (the version the agent pins, if any)",
    )
    def post(self, request: Request, agent_id: Any, name: str) -> Response:
        data = AgentRunInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = services.agent_tool_run(
            actor=self.actor, agent_id=agent_id, name=name, input=data.validated_data["input"]
        )
        return Response(result.as_dict())
