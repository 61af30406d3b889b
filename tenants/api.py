"""The API of the organization itself."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from core.api import ApiView


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
