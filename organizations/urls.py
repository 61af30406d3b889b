"""The owner's plan change (from the Billing page); a support session's hand-off and end."""

from django.urls import path

from organizations import views

app_name = "organizations"

urlpatterns = [
    path("billing/plan", views.plan_change, name="plan-change"),
    path("support/start/", views.support_start, name="support-start"),
    path("support/<int:session_id>/end/", views.support_end, name="support-end"),
]
