"""The API's foundation: the base view with its per-method permission map, errors, pagination.

Every API view derives from `ApiView` and declares what each HTTP method needs:

    class AgentListApi(ApiView):
        required = {"GET": "agents:read", "POST": "agents:write"}

`RequiredPermission` is the one check for sessions, JWTs and API keys alike: the credential
(credentials.authentication.Credential) must carry the declared permission. `ApiView` refuses, when
the class is defined, a subclass that overrides the check or its inputs, leaves a handler without
an entry, or names a method it does not handle. Every error leaves as
`{"error": {"code", "message", "detail"}}` (DESIGN.md, "HTTP contract").
"""

from __future__ import annotations

import functools
import importlib
import logging
import re
import sys
from functools import cache
from typing import Any, ClassVar

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.urls.converters import get_converters
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import build_parameter_type, force_instance
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from core import after_read, errors, strictjson
from core.actors import Actor, Credential
from core.permissions import PUBLIC, Pagination, RequiredPermission

logger = logging.getLogger(__name__)
PERMISSION_PATTERN = re.compile(r"^[a-z][a-z_]*:[a-z][a-z_]*$")
HANDLED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
__all__ = [
    "PUBLIC",
    "ApiView",
    "InputSerializer",
    "Pagination",
    "RequiredPermission",
    "paginated",
]


class ApiView(APIView):
    """The base of every API view. Declare `required`; call services with `self.actor`."""

    required: ClassVar[dict[str, str]] = {}
    permission_classes = [RequiredPermission]

    # The permission check and what it reads: never redefined below this class.
    _final = (
        "permission_classes",
        "authentication_classes",
        "get_permissions",
        "check_permissions",
        "check_object_permissions",
        "get_authenticators",
        "perform_authentication",
        "initial",
        "permission_denied",
        "dispatch",
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls._final:
            if name in cls.__dict__:
                raise TypeError(f"{cls.__name__} must not override {name}: declare `required`")
        required = cls.__dict__.get("required", cls.required)
        if not isinstance(required, dict):
            raise TypeError(f"{cls.__name__}.required must be a dict of method -> permission")
        for method, permission in required.items():
            if method not in HANDLED_METHODS:
                raise TypeError(f"{cls.__name__}.required names unknown method {method!r}")
            if not callable(getattr(cls, method.lower(), None)):
                raise TypeError(f"{cls.__name__}.required names {method} but has no handler")
            if permission != PUBLIC and not PERMISSION_PATTERN.match(str(permission)):
                raise TypeError(f"{cls.__name__}.required[{method!r}] is not a permission")
        for method in HANDLED_METHODS:
            if callable(getattr(cls, method.lower(), None)) and method not in required:
                raise TypeError(f"{cls.__name__} handles {method} without a `required` entry")
        for method in WRITE_METHODS:
            handler = cls.__dict__.get(method.lower())
            if callable(handler) and not getattr(handler, "_api_write", False):
                setattr(cls, method.lower(), _write_handler(handler, method))
        handler = cls.__dict__.get("get")
        if callable(handler) and not getattr(handler, "_api_read", False):
            cls.get = _read_handler(handler)

    def _write(self, method: str, handler: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        """A write handler in one transaction, so that its response is built before anything
        commits: a database lost while re-reading the written object rolls the write back (a 503
        the client retries), never a committed write answered with an error. A refusal keeps
        what was written before it (the refusal's audit row) and is raised after the commit.
        POSTs honour `Idempotency-Key` (idempotency.store; docs/api.md)."""
        key = request.META.get("HTTP_IDEMPOTENCY_KEY") if method == "POST" else None
        idempotent = key is not None and self.required.get("POST") != PUBLIC
        if idempotent and not IDEMPOTENCY_KEY.fullmatch(key):
            raise exceptions.ValidationError(
                {"Idempotency-Key": ["1 to 255 printable ASCII characters, such as a UUID."]}
            )
        store = _idempotency_store() if idempotent else None
        actor = self.actor
        caller = f"{actor.kind}:{actor.id}"
        refusal: Exception | None = None
        response: Any = None
        finished = False
        try:
            with transaction.atomic():
                if store is not None:
                    fingerprint = store.fingerprint(
                        method=method, path=request.path, data=request.data
                    )
                    try:
                        stored = store.begin(
                            caller=caller, key=key, request_fingerprint=fingerprint
                        )
                    except store.KeyReused as error:
                        raise errors.IdempotencyKeyReused from error
                    if stored is not None:
                        headers = {**stored.headers, "Idempotent-Replayed": "true"}
                        return Response(stored.data, status=stored.status, headers=headers)
                try:
                    response = handler(self, request, *args, **kwargs)
                except Exception as error:
                    if transaction.get_rollback() or not _is_refusal(error):
                        raise
                    refusal = error
                    if store is not None:
                        store.abandon(caller=caller, key=key)
                else:
                    if store is not None:
                        if 200 <= response.status_code < 300:
                            store.complete(
                                caller=caller,
                                key=key,
                                status=response.status_code,
                                data=response.data,
                                headers=dict(response.items()),
                            )
                        else:
                            store.abandon(caller=caller, key=key)
                finished = True
        except Exception as error:
            if finished and refusal is None and errors.outage(error) is None:
                # Committed; an after-commit hook failed. The write stands: answer it.
                logger.error("after-commit hook failed for %s", request.path, exc_info=True)
                return response
            raise
        if refusal is not None:
            raise refusal
        return response

    def initial(self, request: Any, *args: Any, **kwargs: Any) -> None:
        check_query(request)
        super().initial(request, *args, **kwargs)

    @property
    def actor(self) -> Actor:
        """The acting principal for services (the user, or the API key, and where from)."""
        credential = getattr(self.request, "auth", None)
        if isinstance(credential, Credential):
            return credential.actor(self.request)
        return Actor.anonymous(self.request)

    def paginated_response(self, items: Any, serializer_class: type[serializers.Serializer]):
        """One page of `items` (a selector's queryset), serialized, with count and links."""
        paginator = Pagination()
        page = paginator.paginate_queryset(items, self.request, view=self)
        return paginator.get_paginated_response(serializer_class(page, many=True).data)


MAX_QUERY_VALUE_LENGTH = 2048


def check_query(request: Any) -> None:
    """Query values are text like any JSON string: no NUL, no lone surrogate, bounded; a 400
    before any view code (or the database, which refuses NUL) sees them."""
    problems: dict[str, list[str]] = {}
    for name, values in request.GET.lists():
        for value in [name, *values]:
            try:
                strictjson.check(value)
            except strictjson.InvalidJson as error:
                problems[str(name)[:64]] = [error.message]
                break
            if "\x00" in value:
                problems[str(name)[:64]] = ["Contains a NUL character."]
                break
            if len(value) > MAX_QUERY_VALUE_LENGTH:
                problems[str(name)[:64]] = [f"At most {MAX_QUERY_VALUE_LENGTH} characters."]
                break
    if problems:
        raise exceptions.ValidationError(problems)


WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,254}")


def _write_handler(handler: Any, method: str) -> Any:
    @functools.wraps(handler)
    def run(self: ApiView, request: Any, *args: Any, **kwargs: Any) -> Any:
        return self._write(method, handler, request, *args, **kwargs)

    run._api_write = True  # type: ignore[attr-defined]
    return run


def _read_handler(handler: Any) -> Any:
    @functools.wraps(handler)
    def run(self: ApiView, request: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            response = handler(self, request, *args, **kwargs)
        except Exception:
            after_read.settle(request)
            raise
        after_read.settle(request)
        return response

    run._api_read = True  # type: ignore[attr-defined]
    return run


def _is_refusal(error: Exception) -> bool:
    """An error answered as a 4xx (what was written before it stands); not an outage or a bug."""
    if isinstance(error, exceptions.APIException):
        return True
    problem = errors.describe(error)
    return problem is not None and problem.status < 500


@cache
def _idempotency_store() -> Any:
    # Through a setting, as DRF reaches its pluggable classes: the store has a model, and core
    # (the bottom layer) has none.
    return importlib.import_module(settings.IDEMPOTENCY_STORE)


class InputSerializer(serializers.Serializer):
    """An input serializer that refuses undeclared fields (a 400), so nothing sent by a client
    (a tenant, a role, scopes, a hash ...) is ever silently dropped or stored. Its schema says so
    (`additionalProperties: false`, ApiSchema)."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(str(name) for name in data if name not in self.fields)
            if unknown:
                raise exceptions.ValidationError({name: ["Unknown field."] for name in unknown})
            # A string field takes a string: DRF's CharField would turn 0 into "0", which the
            # schema (`type: string`) forbids.
            not_text = sorted(
                name
                for name, field in self.fields.items()
                if isinstance(field, serializers.CharField)
                and name in data
                and data[name] is not None
                and not isinstance(data[name], str)
            )
            if not_text:
                raise exceptions.ValidationError({name: ["Must be a string."] for name in not_text})
        return super().to_internal_value(data)


# Text with something to see (DRF strips Python's whitespace, \x1c-\x1f and \x85 included, which
# ECMA's \s is not), and no NUL (DRF refuses it): the pattern of a name that may not be blank.
NOT_BLANK = r"^[^\x00]*[^\s\x00-\x1f\x85][^\x00]*$"


class TextField(serializers.CharField):
    """Text only: DRF's CharField would turn a number into a string the schema forbids. Checked
    as sent: DRF's trimming would check a shorter string than the document's `maxLength` and
    `pattern` see (the services normalise what they store)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(*args, **kwargs)

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            raise serializers.ValidationError("Must be a string.", code="invalid")
        return super().to_internal_value(data)


class PatternField(TextField, serializers.RegexField):
    """Text that matches `regex` (anchored: `^...$`, read as ECMA regexes are in the schema) and
    is none of `reserved` (`not: {enum: ...}` in the schema)."""

    def __init__(self, regex: str, *, reserved: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(regex, **kwargs)
        self.reserved = reserved

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if value in self.reserved:
            raise serializers.ValidationError(f"“{value}” is reserved.", code="reserved")
        return value


class JsonObjectField(serializers.JSONField):
    """A JSON object (a dict), nothing else; `type: object` in the OpenAPI document."""

    default_error_messages = {"not_an_object": "Must be a JSON object."}

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            self.fail("not_an_object")
        return super().to_internal_value(data)


@cache
def paginated(serializer_class: type[serializers.Serializer]) -> type[serializers.Serializer]:
    """The schema of a page of `serializer_class` (for `extend_schema(responses=...)`); the
    operation then documents `page` and `page_size` (ApiSchema)."""
    name = serializer_class.__name__.removesuffix("Serializer")
    return type(
        f"Paginated{name}List",
        (serializers.Serializer,),
        {
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": serializer_class(many=True),
            "is_page": True,
        },
    )


# Errors ---------------------------------------------------------------------------------------


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable, machine-readable reason.")
    message = serializers.CharField(help_text="For people; may change.")
    detail = serializers.JSONField(
        allow_null=True, help_text="Field errors for a 400 (field -> messages), else null."
    )


class ErrorSerializer(serializers.Serializer):
    error = ErrorBodySerializer()


class DomainApiError(exceptions.APIException):
    """A `core.errors.DomainError` on its way through DRF's handler, with its status and code."""

    def __init__(self, problem: errors.Problem) -> None:
        super().__init__(detail=problem.message, code=problem.code)
        self.status_code = problem.status
        self.error_code = problem.code
        self.problem = problem


def error_body(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "detail": detail}}


def _translate(exc: Exception) -> tuple[Exception, dict[str, str]]:
    """Django's and the services' exceptions as DRF ones (plus headers to add)."""
    if isinstance(exc, DjangoValidationError):
        problem = errors.describe(exc)
        if problem is not None and problem.status != 400:  # 403, 409 or 422 (core.errors)
            return DomainApiError(problem), {}
        detail = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        return exceptions.ValidationError(detail), {}
    if isinstance(exc, Http404 | ObjectDoesNotExist):
        return exceptions.NotFound(), {}
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied(str(exc) or None), {}
    unavailable = errors.outage(exc)
    if unavailable is not None:
        exc = unavailable
    if isinstance(exc, errors.DomainError):
        problem = errors.describe(exc)
        assert problem is not None
        return DomainApiError(problem), problem.headers
    return exc, {}


def _code(exc: exceptions.APIException) -> str:
    if isinstance(exc, exceptions.ValidationError):
        return "invalid"
    if isinstance(exc, exceptions.Throttled):
        return "rate_limited"
    code = getattr(exc, "error_code", None) or getattr(exc.detail, "code", None)
    return str(code or exc.default_code)


def exception_handler(exc: Exception, context_: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: every error in the one shape, with its stable code."""
    exc, headers = _translate(exc)
    response = drf_exception_handler(exc, context_)
    if response is None:
        return None  # unexpected: Django's handler500 answers (server_error below)
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        body = error_body("invalid", "The request is invalid.", detail)
    elif isinstance(exc, DomainApiError):
        body = error_body(exc.problem.code, exc.problem.message, exc.problem.detail)
    else:
        body = error_body(_code(exc), str(exc.detail))
    response.data = body
    for name, value in headers.items():
        response[name] = value
    return response


def is_api_path(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


@csrf_exempt  # a POST to an unknown API path is a 404, not a CSRF page
def api_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Unknown paths under /api/ (also with DEBUG on, when Django's own 404 page is technical)."""
    return JsonResponse(error_body("not_found", "Not found."), status=404)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_path(request):
        return JsonResponse(error_body("bad_request", "Bad request."), status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_path(request):
        return JsonResponse(
            error_body("permission_denied", "You do not have permission to do this."), status=403
        )
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_path(request):
        return api_not_found(request)
    return defaults.page_not_found(request, exception)


UNAVAILABLE_PAGE = (
    "<!doctype html><title>Unavailable</title><h1>Temporarily unavailable</h1>"
    "<p>This service is unavailable right now. Try again in a few seconds.</p>"
)


def server_error(request: HttpRequest) -> HttpResponse:
    """Django's handler500, for errors raised outside DRF (middleware, portal pages): a database
    or Redis outage is a 503 with Retry-After, anything else a 500 without details."""
    unavailable = errors.outage(sys.exc_info()[1]) if sys.exc_info()[1] is not None else None
    if unavailable is not None:
        if is_api_path(request):
            response: HttpResponse = JsonResponse(
                error_body(unavailable.code, unavailable.message), status=503
            )
        else:
            response = HttpResponse(UNAVAILABLE_PAGE, status=503)
        response["Retry-After"] = str(unavailable.retry_after)
        return response
    if is_api_path(request):
        return JsonResponse(
            error_body("server_error", "Something went wrong on our side."), status=500
        )
    return defaults.server_error(request)


# OpenAPI ----------------------------------------------------------------------------------------

ERROR_DESCRIPTIONS = {
    400: "Bad input: `detail` maps fields to messages; nothing was changed.",
    401: "No credential, or a bad one (`code` says which: `not_authenticated`, "
    "`token_invalid`, `token_expired`, `api_key_invalid`, `api_key_revoked` ...).",
    403: "The credential lacks the permission this operation declares.",
    404: "Not found (also another organization's object: never a 403).",
    405: "Method not allowed.",
    406: "Not acceptable: this API answers JSON.",
    409: "Conflicts with the organization's state (a name taken, a plan's limit, a reference "
    "to nothing): `code` is `conflict` (`detail`: field -> messages) or names the limit.",
    415: "Unsupported media type: send JSON.",
    422: "Well-formed but not processable in a way the schema cannot state (a range whose end "
    "is not after its start, a time too old, code that does not compile): `unprocessable`; "
    "or `idempotency_key_reused`.",
    429: "Rate limited (`rate_limited`), or a monthly quota or spend budget used up "
    "(`quota_exceeded`, `budget_exceeded`): retry after `Retry-After` seconds.",
    503: "Temporarily unavailable (e.g. the rate limiter): retry after `Retry-After`.",
}


# A JSON value that is not null (JSONField(allow_null=False) refuses null; `{}` would allow it).
JSON_VALUE = {
    "anyOf": [
        {"type": "object", "additionalProperties": {}},
        {"type": "array", "items": {}},
        {"type": "string"},
        {"type": "number"},
        {"type": "boolean"},
    ]
}
PATH_VARIABLE = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<parameter>\w+)>")


class ApiSchema(AutoSchema):
    """drf-spectacular's AutoSchema, reading `required`: security, permission and errors; and
    stating what the server enforces that drf-spectacular does not see by itself:

    - an InputSerializer's body refuses unknown fields: `additionalProperties: false`;
    - a JSONField that refuses null is any JSON value but null; a JsonObjectField an object;
    - a path converter made by `core.converters.documented` gives its pattern and length;
    - a paginated list (`paginated(...)` as its 200) takes `page` and `page_size` in range.
    """

    def _needed(self) -> str | None:
        required = getattr(self.view, "required", None) or {}
        return required.get(self.method)

    def get_operation_id(self) -> str:
        # From the view's name (`ApiKeyListApi` + POST -> `api_key_list_post`): unique and
        # stable, where the path-based default collides for list and detail views.
        name = self.view.__class__.__name__.removesuffix("Api")
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
        return f"{snake}_{self.method.lower()}"

    def get_auth(self) -> list[dict[str, Any]]:
        if self._needed() == PUBLIC:
            return []
        return super().get_auth()

    def get_description(self) -> str:
        description = super().get_description() or ""
        needed = self._needed()
        if needed and needed != PUBLIC:
            note = f"Requires the `{needed}` permission (a role's, or an API key's scope)."
            description = f"{description}\n\n{note}" if description else note
        return description

    def get_extensions(self) -> dict[str, Any]:
        extensions = super().get_extensions() or {}
        needed = self._needed()
        if needed:
            extensions = {**extensions, "x-required-permission": needed}
        return extensions

    def _map_basic_serializer(self, serializer: Any, direction: str) -> dict[str, Any]:
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "request" and isinstance(force_instance(serializer), InputSerializer):
            schema["additionalProperties"] = False
        return schema

    def _map_serializer_field(
        self, field: Any, direction: str, bypass_extensions: bool = False
    ) -> dict[str, Any] | None:
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if schema is not None and getattr(field, "reserved", ()):
            schema["not"] = {"enum": list(field.reserved)}
        if schema is None or "$ref" in schema or not isinstance(field, serializers.JSONField):
            return schema
        if isinstance(field, JsonObjectField):
            return {"type": "object", "additionalProperties": {}, **schema}
        if direction == "request" and not field.allow_null and "type" not in schema:
            return {**JSON_VALUE, **schema}
        return schema

    def _resolve_path_parameters(self, variables: list[str]) -> list[dict[str, Any]]:
        parameters = super()._resolve_path_parameters(variables)
        converters = get_converters()
        named = {
            match["parameter"]: converters.get(match["converter"] or "")
            for match in PATH_VARIABLE.finditer(self.path_regex)
        }
        for parameter in parameters:
            documented = getattr(named.get(parameter["name"]), "schema", None)
            if documented:
                parameter["schema"] = dict(documented)
        return parameters

    def _get_pagination_parameters(self) -> list[dict[str, Any]]:
        if self.method != "GET":
            return []
        responses = self.get_response_serializers()
        page = responses.get(200) if isinstance(responses, dict) else None
        if not getattr(page, "is_page", False):
            return []
        return [
            build_parameter_type(
                name=Pagination.page_query_param,
                schema={"type": "integer", "minimum": 1, "maximum": Pagination.max_page},
                location=OpenApiParameter.QUERY,
                description="The page, from 1.",
            ),
            build_parameter_type(
                name=Pagination.page_size_query_param,
                schema={"type": "integer", "minimum": 1, "maximum": Pagination.max_page_size},
                location=OpenApiParameter.QUERY,
                description=f"Items per page (default {Pagination.page_size}).",
            ),
        ]

    def _get_request_body(self, direction: str = "request") -> dict[str, Any] | None:
        body = super()._get_request_body(direction)
        if body is not None and self.method in ("POST", "PUT"):
            body["required"] = True  # a documented body is needed (an empty one is a 400)
        return body

    def _get_response_bodies(self, direction: str = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        # 401 everywhere: a bad `Authorization` header is refused even where none is needed.
        codes = {400, 401, 405, 406, 415, 429, 503}
        if self._needed() != PUBLIC:
            # A write may name another object (an agent, a key) that does not exist here.
            codes |= {403, 404, 409, 422}
        for code in sorted(codes):
            if str(code) not in responses:
                responses[str(code)] = self._get_response_for_code(
                    OpenApiResponse(ErrorSerializer, description=ERROR_DESCRIPTIONS[code]),
                    str(code),
                )
        # From the HTTP server itself (gunicorn's or the proxy's request-line limit), not JSON.
        responses.setdefault("414", {"description": "The URL is too long (over 4 KB)."})
        return responses
