"""The audit section of an organization's portal."""

from django.urls import path

from audit import views

app_name = "audit"

urlpatterns = [
    path("", views.events, name="event-list"),
    path("export/", views.export, name="event-export"),
    path("verify/", views.verify, name="chain-verify"),
    path("alerts/", views.alerts, name="alert-list"),
    path("alerts/<int:alert_id>/acknowledge/", views.alert_acknowledge, name="alert-acknowledge"),
    path("rules/", views.rules, name="rule-list"),
    path("rules/<int:rule_id>/", views.rule_set_active, name="rule-set-active"),
]
