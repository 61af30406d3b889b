"""Portal URLs of agents, the resource pool and config (on an organization's host)."""

from django.urls import path

from agents import views

app_name = "agents"

urlpatterns = [
    path("agents/", views.agent_list, name="agent-list"),
    path("agents/new/", views.agent_create, name="agent-create"),
    path("agents/<uuid:agent_id>/", views.agent_detail, name="agent-detail"),
    path("agents/<uuid:agent_id>/edit/", views.agent_edit, name="agent-edit"),
    path("agents/<uuid:agent_id>/delete/", views.agent_delete, name="agent-delete"),
    path("agents/<uuid:agent_id>/instances/", views.instance_request, name="instance-request"),
    path(
        "agents/<uuid:agent_id>/instances/<uuid:instance_id>/stop/",
        views.instance_stop,
        name="instance-stop",
    ),
    path("resources/", views.pool_detail, name="pool-detail"),
    path("config/", views.config_list, name="config-list"),
    path("config/delete/", views.config_delete, name="config-delete"),
    path("config/history/", views.config_history, name="config-history"),
    path("config/rollback/", views.config_rollback, name="config-rollback"),
]
