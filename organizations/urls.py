"""The owner's settings: the plan change (Billing page), the two-factor requirement (Members)."""

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
]
