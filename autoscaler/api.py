"""The API of the autoscaler: an agent's scaling policy, state and last decisions, under
/api/v1/agents/{id}/scaling/."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from agents import selectors as agent_selectors
from autoscaler import selectors, services
from autoscaler.models import MAX_COOLDOWN_SECONDS, MAX_INSTANCES_CEILING, MAX_WINDOW_MINUTES
from core.api import ApiView, InputSerializer


def _threshold(help_text: str) -> serializers.FloatField:
    return serializers.FloatField(
        allow_null=True, min_value=0, max_value=services.MAX_THRESHOLD, help_text=help_text
    )


class ScalingPolicyInputSerializer(InputSerializer):
    """Every field (PUT replaces the policy). A metric is watched when both its thresholds are
    set; `null` for both leaves it out."""

    is_enabled = serializers.BooleanField()
    min_instances = serializers.IntegerField(min_value=1, max_value=MAX_INSTANCES_CEILING)
    max_instances = serializers.IntegerField(
        min_value=1, max_value=MAX_INSTANCES_CEILING, help_text="At least `min_instances`."
    )
    window_minutes = serializers.IntegerField(
        min_value=1,
        max_value=MAX_WINDOW_MINUTES,
        help_text="Minutes in a row a threshold must hold before a change.",
    )
    scale_up_cooldown_seconds = serializers.IntegerField(
        min_value=0, max_value=MAX_COOLDOWN_SECONDS, help_text="After any change, before an up."
    )
    scale_down_cooldown_seconds = serializers.IntegerField(
        min_value=0, max_value=MAX_COOLDOWN_SECONDS, help_text="After any change, before a down."
    )
    cpu_up = _threshold("CPU % (mean of the running instances) to scale up at.")
    cpu_down = _threshold("CPU % to scale down at; below `cpu_up`.")
    memory_up = _threshold("Memory, % of each instance's allocation, to scale up at.")
    memory_down = _threshold("Memory % to scale down at; below `memory_up`.")
    queue_up = _threshold("Tasks waiting per instance to scale up at.")
    queue_down = _threshold("Tasks waiting per instance to scale down at; below `queue_up`.")
    response_up = _threshold("Response time (ms) to scale up at.")
    response_down = _threshold("Response time (ms) to scale down at; below `response_up`.")


class ScalingPolicySerializer(ScalingPolicyInputSerializer):
    updated_at = serializers.DateTimeField(allow_null=True)
    updated_by = serializers.CharField()


class ScalingStateSerializer(serializers.Serializer):
    instances = serializers.IntegerField(help_text="Pending and running.")
    pending = serializers.IntegerField()
    direction = serializers.ChoiceField(choices=["up", "down", "hold"], help_text="Now.")
    target = serializers.IntegerField()
    reason = serializers.CharField()
    cooldown_until = serializers.DateTimeField(allow_null=True)


class ScalingDecisionSerializer(serializers.Serializer):
    decided_at = serializers.DateTimeField()
    direction = serializers.ChoiceField(choices=["up", "down"])
    from_count = serializers.IntegerField()
    wanted_count = serializers.IntegerField()
    to_count = serializers.IntegerField(help_text="Below `wanted_count` when the pool was full.")
    reason = serializers.CharField()
    outcome = serializers.CharField()
    metrics = serializers.DictField(
        child=serializers.ListField(child=serializers.FloatField()),
        help_text="The window's values per watched metric, oldest first.",
    )


class ScalingSerializer(serializers.Serializer):
    agent_id = serializers.UUIDField()
    policy = ScalingPolicySerializer()
    state = ScalingStateSerializer()
    decisions = ScalingDecisionSerializer(many=True, help_text="The last 10, newest first.")


def _body(actor: Any, agent_id: Any) -> dict[str, Any]:
    agent = agent_selectors.agent_get(actor=actor, agent_id=agent_id)
    state = selectors.state_get(actor=actor, agent=agent, now=timezone.now())
    policy = state.policy
    return ScalingSerializer(
        {
            "agent_id": agent.pk,
            "policy": {
                **{name: getattr(policy, name) for name in services.POLICY_FIELDS},
                "updated_at": policy.updated_at if policy.pk else None,
                "updated_by": policy.updated_by,
            },
            "state": {
                "instances": state.active,
                "pending": state.pending,
                "direction": state.evaluation.direction,
                "target": state.evaluation.target,
                "reason": state.evaluation.reason,
                "cooldown_until": state.evaluation.cooldown_until,
            },
            "decisions": state.decisions,
        }
    ).data


class ScalingApi(ApiView):
    required = {"GET": "agents:read", "PUT": services.POLICY_PERMISSION}

    @extend_schema(
        tags=["scaling"],
        responses={200: ScalingSerializer},
        summary="An agent's scaling policy (the disabled defaults until set), state, decisions",
    )
    def get(self, request: Request, agent_id: Any) -> Response:
        return Response(_body(self.actor, agent_id))

    @extend_schema(
        tags=["scaling"],
        request=ScalingPolicyInputSerializer,
        responses={200: ScalingSerializer},
        summary="Replace an agent's scaling policy (publishes `scaling.policy_changed`)",
    )
    def put(self, request: Request, agent_id: Any) -> Response:
        agent_selectors.agent_get(actor=self.actor, agent_id=agent_id)  # 404 before 400
        data = ScalingPolicyInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.policy_set(actor=self.actor, agent_id=agent_id, **data.validated_data)
        return Response(_body(self.actor, agent_id))
