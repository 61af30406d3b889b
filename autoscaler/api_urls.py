"""API route of the autoscaler, under /api/v1/."""

from django.urls import path

from autoscaler import api

app_name = "autoscaler_api"

urlpatterns = [
    path("agents/<uuid:agent_id>/scaling/", api.ScalingApi.as_view(), name="scaling"),
]
