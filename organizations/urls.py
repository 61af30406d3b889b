"""The owner's plan change (the Billing page's form posts here)."""

from django.urls import path

from organizations import views

app_name = "organizations"

urlpatterns = [path("", views.plan_change, name="plan-change")]
