"""The API of the organization itself, and the public keys that verify its tokens (JWKS)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from portal.api import ApiView
from tenants import keyring


class OrganizationSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="public_id", help_text="`tenant` and `aud` in tokens.")
    slug = serializers.SlugField()
    name = serializers.CharField()
    plan = serializers.CharField(source="plan.slug")
    region = serializers.CharField()
    status = serializers.CharField()


class OrganizationApi(ApiView):
    """The organization this host serves."""

    required = {"GET": "org:read"}

    @extend_schema(tags=["organization"], responses={200: OrganizationSerializer})
    def get(self, request: Request) -> Response:
        return Response(OrganizationSerializer(request.tenant).data)


@require_GET
def jwks(request: HttpRequest) -> JsonResponse:
    """`/.well-known/jwks.json`: the keys that verify tokens now (the active and previous ones)."""
    response = JsonResponse(keyring.jwks())
    # Verifiers may cache briefly; a rotation's new key is published before any token uses it.
    response["Cache-Control"] = "public, max-age=300"
    return response
