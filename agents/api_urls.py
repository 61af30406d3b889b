"""API routes of agents, instances, the pool and config, under /api/v1/."""

from django.urls import path

from agents import api
from agents.configuration import (
    AGENT_TYPE_PATTERN,
    KEY_PATTERN,
    MAX_KEY_LENGTH,
    RESERVED_AGENT_TYPES,
)
from core.converters import documented

# The views answer a key or type that breaks its rule with a 400; the document states the rule.
documented("config_key", pattern=KEY_PATTERN, max_length=MAX_KEY_LENGTH)
documented("agent_type", pattern=AGENT_TYPE_PATTERN, reserved=tuple(RESERVED_AGENT_TYPES))

app_name = "agents_api"

urlpatterns = [
    path("agents/", api.AgentListApi.as_view(), name="agent-list"),
    path("agents/<uuid:agent_id>/", api.AgentDetailApi.as_view(), name="agent-detail"),
    path(
        "agents/<uuid:agent_id>/instances/",
        api.InstanceListApi.as_view(),
        name="instance-list",
    ),
    path(
        "agents/<uuid:agent_id>/instances/<uuid:instance_id>/",
        api.InstanceDetailApi.as_view(),
        name="instance-detail",
    ),
    path(
        "agents/<uuid:agent_id>/instances/<uuid:instance_id>/stop/",
        api.InstanceStopApi.as_view(),
        name="instance-stop",
    ),
    path("quota/", api.QuotaApi.as_view(), name="quota"),
    path("config/", api.ConfigListApi.as_view(), name="config-list"),
    path(
        "config/agents/<agent_type:agent_type>/",
        api.ConfigResolvedApi.as_view(),
        name="config-resolved",
    ),
    path("config/<config_key:key>/", api.ConfigKeyApi.as_view(), name="config-key"),
]
