"""API routes of the gateway, under /api/v1/."""

from django.urls import path

from gateway import api

app_name = "gateway_api"

urlpatterns = [path("tasks/", api.TaskPublishApi.as_view(), name="task-publish")]
