"""API routes of agents, instances, the pool and config, under /api/v1/."""

from django.urls import path

from agents import api

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
        "config/agents/<str:agent_type>/", api.ConfigResolvedApi.as_view(), name="config-resolved"
    ),
    path("config/<str:key>/", api.ConfigKeyApi.as_view(), name="config-key"),
]
