"""Portal URLs of custom tools (on an organization's host), under /tools/."""

from django.urls import path

from tools import views

app_name = "tools"

urlpatterns = [
    path("", views.tool_list, name="tool-list"),
    path("new/", views.tool_create, name="tool-create"),
    path("<uuid:tool_id>/", views.tool_detail, name="tool-detail"),
    path("<uuid:tool_id>/run/", views.tool_run, name="tool-run"),
    path("<uuid:tool_id>/delete/", views.tool_delete, name="tool-delete"),
]
