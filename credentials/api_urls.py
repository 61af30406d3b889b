"""API routes of credentials, under /api/v1/."""

from django.urls import path

from credentials import api

app_name = "credentials_api"

urlpatterns = [
    path("auth/token", api.TokenObtainApi.as_view(), name="token-obtain"),
    path("auth/token/refresh", api.TokenRefreshApi.as_view(), name="token-refresh"),
    path("auth/token/revoke", api.TokenRevokeApi.as_view(), name="token-revoke"),
    path("api-keys/", api.ApiKeyListApi.as_view(), name="api-key-list"),
    path("api-keys/<int:key_id>/", api.ApiKeyDetailApi.as_view(), name="api-key-detail"),
]
