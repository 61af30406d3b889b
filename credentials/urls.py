"""The portal's API keys page."""

from django.urls import path

from credentials import views

app_name = "credentials"

urlpatterns = [
    path("", views.api_key_list, name="api-key-list"),
    path("<int:key_id>/revoke/", views.api_key_revoke, name="api-key-revoke"),
]
