"""The owner's settings: the plan change (Billing page), the two-factor requirement (Members);
a support session's hand-off and end."""

from django.urls import path

from organizations import views

app_name = "organizations"

urlpatterns = [
    path("billing/plan", views.plan_change, name="plan-change"),
    path(
        "members/require-two-factor/",
        views.two_factor_requirement,
        name="two-factor-requirement",
    ),
    path("support/start/", views.support_start, name="support-start"),
    path("support/<int:session_id>/end/", views.support_end, name="support-end"),
]
