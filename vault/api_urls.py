"""API routes of the vault, under /api/v1/."""

from django.urls import path

from vault import api

app_name = "vault_api"

urlpatterns = [
    path("secrets/", api.SecretListApi.as_view(), name="secret-list"),
    path("secrets/<uuid:secret_id>/", api.SecretDetailApi.as_view(), name="secret-detail"),
    path("knowledge/", api.KnowledgeListApi.as_view(), name="knowledge-list"),
    path(
        "knowledge/<uuid:document_id>/",
        api.KnowledgeDetailApi.as_view(),
        name="knowledge-detail",
    ),
]
