"""The API of the vault: secrets (write-only values) and knowledge documents."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from core.api import ApiView, InputSerializer, PatternField, TextField, paginated
from vault import selectors, services
from vault.models import SECRET_NAME_PATTERN, Classification, KnowledgeDocument, Secret

NO_STORE = {"Cache-Control": "no-store"}


# --- Secrets -------------------------------------------------------------------------------------


class SecretInputSerializer(InputSerializer):
    name = PatternField(
        SECRET_NAME_PATTERN,
        max_length=64,
        help_text="Capital letters, digits and underscores, starting with a letter.",
    )
    value = TextField(
        max_length=services.SECRET_VALUE_MAX_LENGTH,
        trim_whitespace=False,
        write_only=True,
        help_text="Write-only: never returned by any endpoint.",
    )


class SecretValueInputSerializer(InputSerializer):
    value = TextField(
        max_length=services.SECRET_VALUE_MAX_LENGTH, trim_whitespace=False, write_only=True
    )


class SecretSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    masked = serializers.CharField(
        help_text=f"`••••` and the value's last four characters (values of at least "
        f"{services.HINT_MIN_LENGTH} characters; otherwise `••••` alone)."
    )
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField(help_text="When the value was last set.")
    updated_by = serializers.CharField(help_text="Who set it.")


def _secret_data(secret: Secret) -> dict[str, Any]:
    return SecretSerializer(secret).data


class SecretListApi(ApiView):
    """Secrets by name. Values are write-only: set or replace them here, never read them."""

    required = {"GET": "secrets:read", "POST": "secrets:write"}

    @extend_schema(
        tags=["secrets"], responses={200: paginated(SecretSerializer)}, summary="List secrets"
    )
    def get(self, request: Request) -> Response:
        return self.paginated_response(selectors.secret_list(actor=self.actor), SecretSerializer)

    @extend_schema(
        tags=["secrets"],
        request=SecretInputSerializer,
        responses={201: SecretSerializer, 200: SecretSerializer},
        summary="Set a secret (creates it, or replaces the value of the one with this name)",
    )
    def post(self, request: Request) -> Response:
        data = SecretInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        secret, created = services.secret_set(actor=self.actor, **data.validated_data)
        secret = selectors.secret_get(actor=self.actor, secret_id=secret.pk)
        return Response(
            _secret_data(secret),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
            headers=NO_STORE,
        )


class SecretDetailApi(ApiView):
    required = {"GET": "secrets:read", "PUT": "secrets:write", "DELETE": "secrets:write"}

    @extend_schema(tags=["secrets"], responses={200: SecretSerializer}, summary="Get a secret")
    def get(self, request: Request, secret_id: Any) -> Response:
        return Response(_secret_data(selectors.secret_get(actor=self.actor, secret_id=secret_id)))

    @extend_schema(
        tags=["secrets"],
        request=SecretValueInputSerializer,
        responses={200: SecretSerializer},
        summary="Replace a secret's value",
    )
    def put(self, request: Request, secret_id: Any) -> Response:
        secret = selectors.secret_get(actor=self.actor, secret_id=secret_id)  # 404 before 400
        data = SecretValueInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.secret_set(actor=self.actor, name=secret.name, **data.validated_data)
        secret = selectors.secret_get(actor=self.actor, secret_id=secret_id)
        return Response(_secret_data(secret), headers=NO_STORE)

    @extend_schema(
        tags=["secrets"],
        responses={204: OpenApiResponse(description="Deleted.")},
        summary="Delete a secret",
    )
    def delete(self, request: Request, secret_id: Any) -> Response:
        services.secret_delete(actor=self.actor, secret_id=secret_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Knowledge -----------------------------------------------------------------------------------


# vault.services' rule for titles: not blank, no control characters (below U+0020).
TITLE_PATTERN = r"^[^\x00-\x1f]*[^\s\x00-\x1f\x85][^\x00-\x1f]*$"


class KnowledgeInputSerializer(InputSerializer):
    title = PatternField(TITLE_PATTERN, max_length=services.TITLE_MAX_LENGTH)
    text = TextField(max_length=services.TEXT_MAX_LENGTH, trim_whitespace=False, allow_blank=True)
    tags = serializers.ListField(
        child=PatternField(services.TAG_PATTERN.pattern, max_length=40),
        max_length=services.MAX_TAGS,
        required=False,
    )
    classification = serializers.ChoiceField(
        choices=Classification.values,
        required=False,
        help_text="Sets the document's retention (default `general`).",
    )


class KnowledgePatchSerializer(KnowledgeInputSerializer):
    title = PatternField(TITLE_PATTERN, max_length=services.TITLE_MAX_LENGTH, required=False)
    text = TextField(
        max_length=services.TEXT_MAX_LENGTH,
        trim_whitespace=False,
        allow_blank=True,
        required=False,
    )


class KnowledgeSummarySerializer(serializers.Serializer):
    id = serializers.UUIDField()
    title = serializers.CharField()
    tags = serializers.ListField(child=serializers.CharField())
    classification = serializers.ChoiceField(choices=Classification.values)
    size = serializers.IntegerField(help_text="Characters of text.")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    updated_by = serializers.CharField()


class KnowledgeSerializer(KnowledgeSummarySerializer):
    text = serializers.CharField()


def _document_data(document: KnowledgeDocument) -> dict[str, Any]:
    return KnowledgeSerializer(document).data


class KnowledgeListApi(ApiView):
    """Knowledge documents: title and tags listed and searched; the text is encrypted."""

    required = {"GET": "knowledge:read", "POST": "knowledge:write"}

    @extend_schema(
        tags=["knowledge"],
        parameters=[
            OpenApiParameter("search", str, description="Part of the title (any case), or a tag."),
            OpenApiParameter("tag", str, many=True, description="Only documents with this tag."),
        ],
        responses={200: paginated(KnowledgeSummarySerializer)},
        summary="List and search knowledge documents",
    )
    def get(self, request: Request) -> Response:
        documents = selectors.knowledge_list(
            actor=self.actor,
            search=request.query_params.get("search", ""),
            tags=request.query_params.getlist("tag"),
        )
        return self.paginated_response(documents, KnowledgeSummarySerializer)

    @extend_schema(
        tags=["knowledge"],
        request=KnowledgeInputSerializer,
        responses={201: KnowledgeSerializer},
        summary="Add a knowledge document",
    )
    def post(self, request: Request) -> Response:
        data = KnowledgeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        document = services.knowledge_create(actor=self.actor, **data.validated_data)
        return Response(_document_data(document), status=status.HTTP_201_CREATED)


class KnowledgeDetailApi(ApiView):
    required = {"GET": "knowledge:read", "PATCH": "knowledge:write", "DELETE": "knowledge:write"}

    @extend_schema(
        tags=["knowledge"],
        responses={200: KnowledgeSerializer},
        summary="Read a knowledge document (its text decrypted)",
    )
    def get(self, request: Request, document_id: Any) -> Response:
        document = selectors.knowledge_get(actor=self.actor, document_id=document_id)
        return Response(_document_data(document))

    @extend_schema(
        tags=["knowledge"],
        request=KnowledgePatchSerializer,
        responses={200: KnowledgeSerializer},
        summary="Change a knowledge document",
    )
    def patch(self, request: Request, document_id: Any) -> Response:
        selectors.knowledge_get(actor=self.actor, document_id=document_id)  # 404 before 400
        data = KnowledgePatchSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        document = services.knowledge_update(
            actor=self.actor, document_id=document_id, **data.validated_data
        )
        return Response(_document_data(document))

    @extend_schema(
        tags=["knowledge"],
        responses={204: OpenApiResponse(description="Deleted.")},
        summary="Delete a knowledge document",
    )
    def delete(self, request: Request, document_id: Any) -> Response:
        services.knowledge_delete(actor=self.actor, document_id=document_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
