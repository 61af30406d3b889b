"""The tasks API: `POST /api/v1/tasks/` publishes a task to the organization's agents."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from core.api import ApiView, ErrorSerializer, InputSerializer
from gateway import services


class TaskInputSerializer(InputSerializer):
    agent = serializers.UUIDField(
        required=False, allow_null=True, help_text="One agent (`agents.<id>.task`); else all."
    )
    task = serializers.DictField(
        help_text="The task for the runtime, e.g. `{kind: echo, input: ...}` (64 KB at most)."
    )


class TaskPublishedSerializer(serializers.Serializer):
    id = serializers.CharField()
    subject = serializers.CharField()


class TaskPublishApi(ApiView):
    """Publish a task: running agents subscribed to its subject receive it over the gateway."""

    required = {"POST": "tasks:publish"}
    rate_limit_resource = "tasks"  # the plan's `tasks` limit (billing), not `api`

    @extend_schema(
        request=TaskInputSerializer,
        responses={
            202: TaskPublishedSerializer,
            429: OpenApiResponse(
                ErrorSerializer,
                description="`rate_limited` (the plan's `tasks` limit), or `quota_exceeded`: the "
                "month's messages are used up (`detail.quota.name` is "
                "`gateway_messages_per_month`), or `budget_exceeded`: retry after `Retry-After`.",
            ),
        },
    )
    def post(self, request: Request) -> Response:
        data = TaskInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        published = services.task_publish(
            actor=self.actor,
            task=data.validated_data["task"],
            agent_id=data.validated_data.get("agent"),
        )
        return Response(published, status=202)
