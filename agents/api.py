"""The API of agents: definitions, instances, the pool (quota) and config keys, under /api/v1/."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from agents import selectors, services
from agents.configuration import AGENT_TYPE_PATTERN, RESERVED_AGENT_TYPES, validate_agent_type
from agents.models import Agent, InstanceStatus
from core.agent_permissions import CATALOGUE as AGENT_PERMISSIONS
from core.agent_permissions import MAX_TOOLS, TOOL_ENTRY_RE
from core.agent_permissions import NAMES as AGENT_PERMISSION_NAMES
from core.api import (
    NOT_BLANK,
    ApiView,
    InputSerializer,
    JsonObjectField,
    Pagination,
    PatternField,
    TextField,
    paginated,
)
from vault.models import SECRET_NAME_PATTERN
from vault.services import MAX_SECRETS_PER_AGENT

AGENT_OPTIONAL_DEFAULTS = {
    "description": "",
    "config": {},
    "permissions": [],
    "tools": [],
    "secrets": [],
}


class QuotaErrorSerializer(serializers.Serializer):
    code = serializers.ChoiceField(
        choices=[
            "agent_limit_reached",
            "instance_limit_reached",
            "insufficient_cpu",
            "insufficient_memory",
            "instance_too_large",
            "conflict",
        ]
    )
    message = serializers.CharField()
    detail = serializers.DictField(
        help_text="`limit` (the limit's name), `allowed`, `in_use`, `requested`; for a "
        "`conflict`, field -> messages."
    )


class QuotaErrorBodySerializer(serializers.Serializer):
    error = QuotaErrorSerializer()


QUOTA_409 = OpenApiResponse(
    QuotaErrorBodySerializer, description="A limit of the organization's pool; `code` names it."
)


# --- Serializers -----------------------------------------------------------------------------


# What the API takes for cpu and memory: the forms agents.resources parses, above zero and to the
# millicore (the plan's maximum per instance is a 409). Leading zeros and spare decimals, which the
# parser would also read, are left out so that the pattern can say "above zero".
CPU_PATTERN = (
    r"^([1-9][0-9]{0,8}m|[1-9][0-9]{0,5}(\.[0-9]{1,3})?|0\.([1-9][0-9]{0,2}|0[1-9][0-9]?|00[1-9]))$"
)
MEMORY_PATTERN = r"^([1-9][0-9]{0,8}(Mi|MB|Gi|GB)|[0-9]{1,6}\.(5|25|75|125|375|625|875)(Gi|GB))$"


class AgentInputSerializer(InputSerializer):
    """What a client may send; the service checks the values against the organization (a name
    taken, above the plan's maximum, a secret that does not exist: 409)."""

    name = PatternField(NOT_BLANK, max_length=services.MAX_NAME_LENGTH, help_text="Not blank.")
    type = PatternField(
        AGENT_TYPE_PATTERN,
        reserved=tuple(RESERVED_AGENT_TYPES),
        help_text="`worker`, `assistant`, `router`, or a custom type (`billing-bot`).",
    )
    description = TextField(
        required=False,
        allow_blank=True,
        allow_null=True,
        max_length=services.MAX_DESCRIPTION_LENGTH,
    )
    config = JsonObjectField(required=False, help_text="A JSON object, 64 KB at most.")
    cpu = PatternField(CPU_PATTERN, help_text="Per instance: `0.25` cores or `250m`.")
    memory = PatternField(MEMORY_PATTERN, help_text="Per instance: `512MB`, `2GB`, `1.5Gi`.")
    permissions = serializers.ListField(
        child=serializers.ChoiceField(choices=AGENT_PERMISSION_NAMES),
        required=False,
        max_length=len(AGENT_PERMISSIONS),
        help_text="Agent permissions; each must be allowed by the plan (else 409).",
    )
    tools = serializers.ListField(
        child=PatternField(TOOL_ENTRY_RE.pattern),
        required=False,
        max_length=MAX_TOOLS,
        help_text="Tool names, `@<version>` to pin one.",
    )
    secrets = serializers.ListField(
        child=PatternField(SECRET_NAME_PATTERN, max_length=64),
        required=False,
        max_length=MAX_SECRETS_PER_AGENT,
        help_text="Names of existing secrets; attached runtimes receive their values.",
    )


class AgentSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    type = serializers.CharField()
    description = serializers.CharField()
    status = serializers.ChoiceField(
        choices=selectors.AGENT_STATUSES, help_text="From its instances."
    )
    active_instances = serializers.SerializerMethodField()
    cpu = serializers.CharField(help_text="Per instance.")
    cpu_millicores = serializers.IntegerField()
    memory = serializers.CharField(help_text="Per instance.")
    memory_mb = serializers.IntegerField()
    permissions = serializers.ListField(child=serializers.CharField(), help_text="As asked.")
    granted_permissions = serializers.SerializerMethodField(
        help_text="What the current plan allows of `permissions`."
    )
    tools = serializers.ListField(child=serializers.CharField())
    secrets = serializers.ListField(
        child=serializers.CharField(), help_text="Names only: values are never shown."
    )
    config = serializers.JSONField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    created_by = serializers.CharField()

    def get_active_instances(self, agent: Agent) -> int:
        return agent.active_instances

    def get_granted_permissions(self, agent: Agent) -> list[str]:
        return selectors.granted_permissions(agent=agent, limits=self.context["limits"])


class InstanceSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    agent_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=InstanceStatus.values)
    namespace = serializers.CharField(help_text="`tenant.<tenant_id>.agents.<agent_id>`")
    cpu = serializers.CharField()
    cpu_millicores = serializers.IntegerField()
    memory = serializers.CharField()
    memory_mb = serializers.IntegerField()
    requested_by = serializers.CharField()
    requested_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    last_heartbeat_at = serializers.DateTimeField(allow_null=True)
    stopped_at = serializers.DateTimeField(allow_null=True)


class UsageSerializer(serializers.Serializer):
    used = serializers.IntegerField()
    limit = serializers.IntegerField()


class QuotaSerializer(serializers.Serializer):
    agents = UsageSerializer()
    instances = UsageSerializer()
    cpu_millicores = UsageSerializer()
    memory_mb = UsageSerializer()
    messages_this_month = UsageSerializer()
    per_instance = serializers.DictField(child=serializers.IntegerField())
    allowed_agent_permissions = serializers.ListField(child=serializers.CharField())
    overridden = serializers.ListField(
        child=serializers.CharField(), help_text="Limits set by staff for this organization."
    )


class ConfigKeySerializer(serializers.Serializer):
    key = serializers.CharField()
    value = serializers.JSONField()
    version = serializers.IntegerField()
    updated_at = serializers.DateTimeField()
    updated_by = serializers.CharField()


class ConfigValueInputSerializer(InputSerializer):
    value = serializers.JSONField(
        help_text="Any JSON but null (an object for `agents.*`), 64 KB at most; DELETE removes."
    )


class ProvenanceSerializer(serializers.Serializer):
    pointer = serializers.CharField(help_text="JSON Pointer of the value.")
    value = serializers.JSONField()
    source = serializers.CharField(help_text="`platform`, `organization` or `definition`.")
    key = serializers.CharField(help_text="The config key it came from (empty for a definition).")


class ResolvedConfigSerializer(serializers.Serializer):
    type = serializers.CharField()
    config = serializers.JSONField()
    provenance = ProvenanceSerializer(many=True)
    layers = serializers.ListField(child=serializers.CharField())


# --- Agents ----------------------------------------------------------------------------------


class AgentFilterSerializer(serializers.Serializer):
    """The list's query parameters (a blank `type` or `status` is refused, as the schema says)."""

    type = PatternField(AGENT_TYPE_PATTERN, required=False, help_text="Only this type.")
    status = serializers.ChoiceField(choices=list(selectors.AGENT_STATUSES), required=False)
    search = TextField(required=False, allow_blank=True, help_text="Part of the name, any case.")


class InstanceFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=InstanceStatus.values, required=False)


_DATETIME = serializers.DateTimeField()


def _agent_data(agent: Agent, limits: selectors.Limits) -> dict[str, Any]:
    """What AgentSerializer gives for `agent`, built directly: a list of 50 agents through the
    serializer's generic fields cost more than the rest of the request (bench/api_read.py).
    AgentSerializer stays the schema; a test holds the two equal."""
    return {
        "id": str(agent.id),
        "name": agent.name,
        "type": agent.type,
        "description": agent.description,
        "status": agent.status,
        "active_instances": agent.active_instances,
        "cpu": agent.cpu,
        "cpu_millicores": agent.cpu_millicores,
        "memory": agent.memory,
        "memory_mb": agent.memory_mb,
        "permissions": [str(name) for name in agent.permissions],
        "granted_permissions": selectors.granted_permissions(agent=agent, limits=limits),
        "tools": [str(name) for name in agent.tools],
        "secrets": [str(name) for name in agent.secrets],
        "config": agent.config,
        "created_at": _DATETIME.to_representation(agent.created_at),
        "updated_at": _DATETIME.to_representation(agent.updated_at),
        "created_by": agent.created_by,
    }


class AgentListApi(ApiView):
    required = {"GET": "agents:read", "POST": "agents:write"}

    @extend_schema(
        tags=["agents"],
        parameters=[AgentFilterSerializer],
        responses={200: paginated(AgentSerializer)},
        summary="List agents",
    )
    def get(self, request: Request) -> Response:
        filters = AgentFilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        agents = selectors.agent_list(
            actor=self.actor,
            agent_type=filters.validated_data.get("type"),
            status=filters.validated_data.get("status"),
            search=filters.validated_data.get("search") or None,
        )
        paginator = Pagination()
        page = paginator.paginate_queryset(agents, request, view=self)
        limits = selectors.limits_get()
        data = [_agent_data(agent, limits) for agent in page]
        return paginator.get_paginated_response(data)

    @extend_schema(
        tags=["agents"],
        request=AgentInputSerializer,
        responses={201: AgentSerializer, 409: QUOTA_409},
        summary="Create an agent",
    )
    def post(self, request: Request) -> Response:
        data = AgentInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        agent = services.agent_create(actor=self.actor, **data.validated_data)
        agent = selectors.agent_get(actor=self.actor, agent_id=agent.pk)
        return Response(_agent_data(agent, selectors.limits_get()), status=status.HTTP_201_CREATED)


class AgentDetailApi(ApiView):
    required = {
        "GET": "agents:read",
        "PUT": "agents:write",
        "PATCH": "agents:write",
        "DELETE": "agents:write",
    }

    @extend_schema(tags=["agents"], responses={200: AgentSerializer}, summary="Get an agent")
    def get(self, request: Request, agent_id: Any) -> Response:
        agent = selectors.agent_get(actor=self.actor, agent_id=agent_id)
        return Response(_agent_data(agent, selectors.limits_get()))

    def _update(self, request: Request, agent_id: Any, *, partial: bool) -> Response:
        data = AgentInputSerializer(data=request.data, partial=partial)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        if not partial:
            fields = {**AGENT_OPTIONAL_DEFAULTS, **fields}
            selectors.agent_get(actor=self.actor, agent_id=agent_id)  # 404 before 400
            services.agent_validate(data=fields)
        services.agent_update(actor=self.actor, agent_id=agent_id, **fields)
        agent = selectors.agent_get(actor=self.actor, agent_id=agent_id)
        return Response(_agent_data(agent, selectors.limits_get()))

    @extend_schema(
        tags=["agents"],
        request=AgentInputSerializer,
        responses={200: AgentSerializer},
        summary="Replace an agent (name, type, cpu and memory are required)",
    )
    def put(self, request: Request, agent_id: Any) -> Response:
        return self._update(request, agent_id, partial=False)

    @extend_schema(
        tags=["agents"],
        request=AgentInputSerializer,
        responses={200: AgentSerializer},
        summary="Change some fields of an agent",
    )
    def patch(self, request: Request, agent_id: Any) -> Response:
        return self._update(request, agent_id, partial=True)

    @extend_schema(
        tags=["agents"],
        responses={204: OpenApiResponse(description="Deleted; its instances were stopped.")},
        summary="Delete an agent",
    )
    def delete(self, request: Request, agent_id: Any) -> Response:
        services.agent_delete(actor=self.actor, agent_id=agent_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Instances -------------------------------------------------------------------------------


class InstanceListApi(ApiView):
    required = {"GET": "agents:read", "POST": "agents:write"}

    @extend_schema(
        tags=["instances"],
        parameters=[InstanceFilterSerializer],
        responses={200: paginated(InstanceSerializer)},
        summary="List an agent's instances (active first)",
    )
    def get(self, request: Request, agent_id: Any) -> Response:
        agent = selectors.agent_get(actor=self.actor, agent_id=agent_id)
        instances = selectors.instance_list(actor=self.actor, agent=agent)
        filters = InstanceFilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        if "status" in filters.validated_data:
            instances = instances.filter(status=filters.validated_data["status"])
        return self.paginated_response(instances, InstanceSerializer)

    @extend_schema(
        tags=["instances"],
        request=None,
        responses={201: InstanceSerializer, 409: QUOTA_409},
        summary="Request an instance (checked against every limit of the pool)",
    )
    def post(self, request: Request, agent_id: Any) -> Response:
        instance = services.instance_request(actor=self.actor, agent_id=agent_id)
        return Response(InstanceSerializer(instance).data, status=status.HTTP_201_CREATED)


class InstanceDetailApi(ApiView):
    required = {"GET": "agents:read"}

    @extend_schema(tags=["instances"], responses={200: InstanceSerializer}, summary="Get one")
    def get(self, request: Request, agent_id: Any, instance_id: Any) -> Response:
        agent = selectors.agent_get(actor=self.actor, agent_id=agent_id)
        instance = selectors.instance_get(actor=self.actor, agent=agent, instance_id=instance_id)
        return Response(InstanceSerializer(instance).data)


class InstanceStopApi(ApiView):
    required = {"POST": "agents:write"}

    @extend_schema(
        tags=["instances"],
        request=None,
        responses={200: InstanceSerializer},
        summary="Stop an instance (its resources return to the pool at once)",
    )
    def post(self, request: Request, agent_id: Any, instance_id: Any) -> Response:
        instance = services.instance_stop(
            actor=self.actor, agent_id=agent_id, instance_id=instance_id
        )
        return Response(InstanceSerializer(instance).data)


# --- The pool --------------------------------------------------------------------------------


class QuotaApi(ApiView):
    required = {"GET": "agents:read"}

    @extend_schema(
        tags=["quota"],
        responses={200: QuotaSerializer},
        summary="The organization's resource pool: limits and what is in use",
    )
    def get(self, request: Request) -> Response:
        pool = selectors.pool_get(actor=self.actor)
        limits = pool.limits
        body = {
            "agents": {"used": pool.agents, "limit": limits.max_agents},
            "instances": {"used": pool.instances, "limit": limits.max_instances},
            "cpu_millicores": {"used": pool.cpu_millicores, "limit": limits.max_cpu_millicores},
            "memory_mb": {"used": pool.memory_mb, "limit": limits.max_memory_mb},
            "messages_this_month": {
                "used": pool.messages_this_month,
                "limit": limits.messages_per_month,
            },
            "per_instance": {
                "cpu_millicores": limits.max_instance_cpu_millicores,
                "memory_mb": limits.max_instance_memory_mb,
            },
            "allowed_agent_permissions": sorted(limits.allowed_agent_permissions),
            "overridden": sorted(limits.overridden),
        }
        return Response(QuotaSerializer(body).data)


# --- Config ----------------------------------------------------------------------------------


class ConfigListApi(ApiView):
    required = {"GET": "config:read"}

    @extend_schema(
        tags=["config"], responses={200: paginated(ConfigKeySerializer)}, summary="List keys"
    )
    def get(self, request: Request) -> Response:
        return self.paginated_response(selectors.config_list(actor=self.actor), ConfigKeySerializer)


class ConfigKeyApi(ApiView):
    required = {"GET": "config:read", "PUT": "config:write", "DELETE": "config:write"}

    @extend_schema(tags=["config"], responses={200: ConfigKeySerializer}, summary="Get a key")
    def get(self, request: Request, key: str) -> Response:
        return Response(ConfigKeySerializer(selectors.config_get(actor=self.actor, key=key)).data)

    @extend_schema(
        tags=["config"],
        request=ConfigValueInputSerializer,
        responses={200: ConfigKeySerializer},
        summary="Set a key (publishes `config.changed` {key, value, version})",
    )
    def put(self, request: Request, key: str) -> Response:
        data = ConfigValueInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        entry = services.config_set(actor=self.actor, key=key, value=data.validated_data["value"])
        return Response(ConfigKeySerializer(entry).data)

    @extend_schema(
        tags=["config"],
        responses={204: OpenApiResponse(description="Deleted (`config.changed` with null).")},
        summary="Delete a key",
    )
    def delete(self, request: Request, key: str) -> Response:
        services.config_delete(actor=self.actor, key=key)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ConfigResolvedApi(ApiView):
    required = {"GET": "config:read"}

    @extend_schema(
        tags=["config"],
        responses={200: ResolvedConfigSerializer},
        summary="The configuration agents of a type get, and where each value comes from",
    )
    def get(self, request: Request, agent_type: str) -> Response:
        validate_agent_type(agent_type)
        resolution = selectors.config_resolve(actor=self.actor, agent_type=agent_type)
        body = {
            "type": agent_type,
            "config": resolution.value,
            "provenance": [
                {
                    "pointer": item.pointer,
                    "value": item.value,
                    "source": item.layer.source,
                    "key": item.layer.name,
                }
                for item in resolution.provenance
            ],
            "layers": [layer.label for layer in resolution.layers],
        }
        return Response(ResolvedConfigSerializer(body).data)
