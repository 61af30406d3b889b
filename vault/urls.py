"""The portal's vault pages."""

from django.urls import path

from vault import views

app_name = "vault"

urlpatterns = [
    path("secrets/", views.secret_list, name="secret-list"),
    path("secrets/<uuid:secret_id>/delete/", views.secret_delete, name="secret-delete"),
    path("knowledge/", views.knowledge_list, name="knowledge-list"),
    path("knowledge/new/", views.knowledge_create, name="knowledge-create"),
    path("knowledge/<uuid:document_id>/", views.knowledge_detail, name="knowledge-detail"),
    path("knowledge/<uuid:document_id>/edit/", views.knowledge_edit, name="knowledge-edit"),
    path("knowledge/<uuid:document_id>/delete/", views.knowledge_delete, name="knowledge-delete"),
    path("settings/", views.settings_page, name="settings"),
    path("settings/data-key/rotate/", views.data_key_rotate, name="data-key-rotate"),
]
