"""The API of credentials: tokens (obtain, refresh, revoke) and API keys (create, list, revoke)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from core.api import NOT_BLANK, PUBLIC, ApiView, InputSerializer, PatternField, paginated
from core.errors import Unauthenticated
from core.roles import delegable_scopes
from credentials import keyring, selectors, services
from credentials.authentication import CredentialRefused
from credentials.models import ApiKey

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


# Tokens --------------------------------------------------------------------------------------


class TokenObtainInputSerializer(InputSerializer):
    username = serializers.CharField(max_length=254, help_text="The account's email.")
    password = serializers.CharField(max_length=4096, trim_whitespace=False)


class RefreshInputSerializer(InputSerializer):
    refresh = serializers.CharField(max_length=8192)


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField(help_text="RS256 JWT, valid 15 minutes.")
    refresh = serializers.CharField(help_text="Works once: trade it for a new pair.")
    token_type = serializers.CharField(help_text="Always `Bearer`.")
    expires_in = serializers.IntegerField(help_text="Seconds until the access token expires.")
    refresh_expires_in = serializers.IntegerField()


def _pair_response(pair: services.TokenPair) -> Response:
    body = {
        "access": pair.access,
        "refresh": pair.refresh,
        "token_type": "Bearer",
        "expires_in": settings.JWT_ACCESS_TOKEN_LIFETIME_SECONDS,
        "refresh_expires_in": settings.JWT_REFRESH_TOKEN_LIFETIME_SECONDS,
    }
    return Response(body, headers=NO_STORE)


def _refused(error: Unauthenticated) -> CredentialRefused:
    return CredentialRefused(error.code, error.message)


class TokenObtainApi(ApiView):
    """Exchange an account's email and password for an access and a refresh token."""

    # Sign-in has its own limits (per address, per account), not the plan's `api` limit.
    throttle_classes = ()
    required = {"POST": PUBLIC}

    @extend_schema(
        tags=["auth"],
        request=TokenObtainInputSerializer,
        responses={200: TokenPairSerializer},
        summary="Get tokens",
    )
    def post(self, request: Request) -> Response:
        data = TokenObtainInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            pair = services.token_obtain(
                actor=self.actor,
                email=data.validated_data["username"],
                password=data.validated_data["password"],
                request=request._request,
            )
        except Unauthenticated as error:
            raise _refused(error) from error
        return _pair_response(pair)


class TokenRefreshApi(ApiView):
    """Trade a refresh token for a new pair; the old refresh token stops working."""

    required = {"POST": PUBLIC}

    @extend_schema(
        tags=["auth"],
        request=RefreshInputSerializer,
        responses={200: TokenPairSerializer},
        summary="Refresh tokens",
    )
    def post(self, request: Request) -> Response:
        data = RefreshInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            pair = services.token_refresh(actor=self.actor, refresh=data.validated_data["refresh"])
        except Unauthenticated as error:
            raise _refused(error) from error
        return _pair_response(pair)


class TokenRevokeApi(ApiView):
    """End a sign-in: the refresh token, and every token refreshed from the same sign-in."""

    required = {"POST": PUBLIC}

    @extend_schema(
        tags=["auth"],
        request=RefreshInputSerializer,
        responses={204: OpenApiResponse(description="Revoked.")},
        summary="Revoke a refresh token",
    )
    def post(self, request: Request) -> Response:
        data = RefreshInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            services.token_revoke(actor=self.actor, refresh=data.validated_data["refresh"])
        except Unauthenticated as error:
            raise _refused(error) from error
        return Response(status=status.HTTP_204_NO_CONTENT)


# API keys ------------------------------------------------------------------------------------


class RateLimitSerializer(serializers.Serializer):
    limit = serializers.IntegerField(min_value=0, max_value=services.KEY_LIMIT_MAX)
    window_seconds = serializers.IntegerField(
        min_value=1, max_value=services.KEY_WINDOW_MAX_SECONDS, default=60
    )


@extend_schema_field(
    {
        "type": "object",
        "description": "The key's own limits beside its organization's, per resource "
        f"({', '.join(services.KEY_LIMIT_RESOURCES)}); over one, 429 `rate_limited` with the "
        "policy `<resource>.key` in the RateLimit headers. `{}` removes them.",
        "properties": {
            name: {
                "type": "object",
                "properties": {
                    "limit": {"type": "integer", "minimum": 0, "maximum": services.KEY_LIMIT_MAX},
                    "window_seconds": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": services.KEY_WINDOW_MAX_SECONDS,
                        "default": 60,
                    },
                },
                "required": ["limit"],
                "additionalProperties": False,
            }
            for name in services.KEY_LIMIT_RESOURCES
        },
        "additionalProperties": False,
    }
)
class RateLimitsField(serializers.JSONField):
    """Checked by the service (credentials.services.clean_rate_limits)."""


class ApiKeyCreateInputSerializer(InputSerializer):
    name = PatternField(NOT_BLANK, max_length=services.NAME_MAX_LENGTH, help_text="Not blank.")
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(delegable_scopes())),
        min_length=1,
        max_length=services.MAX_SCOPES,
        help_text="Permissions the key carries, among those your role holds "
        "(e.g. `agents:read`, `agents:write`, `audit:read`).",
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    rate_limits = RateLimitsField(required=False)


class ApiKeyLimitsInputSerializer(InputSerializer):
    rate_limits = RateLimitsField()


class ApiKeySerializer(serializers.ModelSerializer):
    prefix = serializers.CharField(read_only=True, help_text="Identifies the key; not secret.")
    status = serializers.ChoiceField(choices=["active", "revoked", "expired"], read_only=True)
    created_by = serializers.EmailField(source="created_by.email", read_only=True)
    scopes = serializers.ListField(child=serializers.CharField(), read_only=True)
    rate_limits = RateLimitsField(read_only=True)

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "prefix",
            "scopes",
            "rate_limits",
            "status",
            "created_at",
            "created_by",
            "last_used_at",
            "expires_at",
            "revoked_at",
        ]
        read_only_fields = fields


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(
        read_only=True, help_text="The full key. Shown this once: store it now."
    )

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]
        read_only_fields = fields


class ApiKeyListApi(ApiView):
    required = {"GET": "api_keys:manage", "POST": "api_keys:manage"}

    @extend_schema(
        tags=["api-keys"], responses={200: paginated(ApiKeySerializer)}, summary="List API keys"
    )
    def get(self, request: Request) -> Response:
        return self.paginated_response(selectors.api_key_list(actor=self.actor), ApiKeySerializer)

    @extend_schema(
        tags=["api-keys"],
        request=ApiKeyCreateInputSerializer,
        responses={201: ApiKeyCreatedSerializer},
        summary="Create an API key (the secret is in this response only)",
    )
    def post(self, request: Request) -> Response:
        data = ApiKeyCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key, raw = services.api_key_create(
            actor=self.actor,
            name=data.validated_data["name"],
            scopes=data.validated_data["scopes"],
            expires_at=data.validated_data.get("expires_at"),
            rate_limits=data.validated_data.get("rate_limits"),
        )
        key.key = raw
        return Response(
            ApiKeyCreatedSerializer(key).data, status=status.HTTP_201_CREATED, headers=NO_STORE
        )


class ApiKeyDetailApi(ApiView):
    required = {"GET": "api_keys:manage", "PATCH": "api_keys:manage", "DELETE": "api_keys:manage"}

    @extend_schema(tags=["api-keys"], responses={200: ApiKeySerializer}, summary="Get an API key")
    def get(self, request: Request, key_id: int) -> Response:
        key = selectors.api_key_get(actor=self.actor, key_id=key_id)
        return Response(ApiKeySerializer(key).data)

    @extend_schema(
        tags=["api-keys"],
        request=ApiKeyLimitsInputSerializer,
        responses={200: ApiKeySerializer},
        summary="Set an API key's own rate limits",
    )
    def patch(self, request: Request, key_id: int) -> Response:
        # A PATCH changes what it names (the document's `Patched…` body): `{}` changes nothing.
        data = ApiKeyLimitsInputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        if "rate_limits" in data.validated_data:
            key = services.api_key_limits_set(
                actor=self.actor, key_id=key_id, rate_limits=data.validated_data["rate_limits"]
            )
        else:
            key = selectors.api_key_get(actor=self.actor, key_id=key_id)
        return Response(ApiKeySerializer(key).data)

    @extend_schema(
        tags=["api-keys"],
        responses={204: OpenApiResponse(description="Revoked: refused from now on.")},
        summary="Revoke an API key",
    )
    def delete(self, request: Request, key_id: int) -> Response:
        services.api_key_revoke(actor=self.actor, key_id=key_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


# The public keys -------------------------------------------------------------------------------


@require_GET
def jwks(request: HttpRequest) -> JsonResponse:
    """`/.well-known/jwks.json`: the keys that verify tokens now (the active and previous ones)."""
    response = JsonResponse(keyring.jwks())
    # Verifiers may cache briefly; a rotation's new key is published before any token uses it.
    response["Cache-Control"] = "public, max-age=300"
    return response
