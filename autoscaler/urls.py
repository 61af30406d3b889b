"""Portal URLs of the autoscaler (on an organization's host)."""

from django.urls import path

from autoscaler import views

app_name = "autoscaler"

urlpatterns = [
    path("agents/<uuid:agent_id>/scaling/", views.policy_edit, name="policy-edit"),
]
