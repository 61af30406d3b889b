"""API routes of the organization, under /api/v1/."""

from django.urls import path

from tenants import api

app_name = "tenants_api"

urlpatterns = [
    path("organization/", api.OrganizationApi.as_view(), name="organization-detail"),
]
