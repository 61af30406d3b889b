"""API routes of custom tools, under /api/v1/."""

from django.urls import path

from tools import api

app_name = "tools_api"

urlpatterns = [
    path("tools/", api.ToolListApi.as_view(), name="tool-list"),
    path("tools/<uuid:tool_id>/", api.ToolDetailApi.as_view(), name="tool-detail"),
    path("tools/<uuid:tool_id>/versions/", api.ToolVersionListApi.as_view(), name="version-list"),
    path("tools/<uuid:tool_id>/runs/", api.ToolRunApi.as_view(), name="run"),
    path(
        "agents/<uuid:agent_id>/tools/<str:name>/runs/",
        api.AgentToolRunApi.as_view(),
        name="agent-run",
    ),
]
