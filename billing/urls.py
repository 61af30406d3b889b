"""The portal's billing pages."""

from django.urls import path

from billing import views

app_name = "billing"

urlpatterns = [
    path("", views.usage, name="usage"),
    path("download", views.usage_download, name="usage-download"),
]
