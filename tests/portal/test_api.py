"""The API base: the declared permission map, the one error shape, and who may declare what."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from core.api import ApiView
from tests.credentials.helpers import (
    api_key,
    api_key_header,
    bearer,
    error_code,
    post_json,
    token_pair,
)

PROBE = "/api/v1/probe/"


@pytest.fixture
def probe_urls(settings):
    settings.ROOT_URLCONF = "tests.portal.api_probe_urls"


# Declaring views ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attribute",
    [
        "permission_classes",
        "authentication_classes",
        "check_permissions",
        "get_permissions",
        "initial",
        "dispatch",
    ],
)
def test_a_view_cannot_override_the_check(attribute):
    with pytest.raises(TypeError, match=f"must not override {attribute}"):
        type("SneakyApi", (ApiView,), {"required": {"GET": "org:read"}, attribute: []})


def test_every_handler_needs_an_entry():
    with pytest.raises(TypeError, match="handles POST without a `required` entry"):
        type(
            "HalfApi",
            (ApiView,),
            {"required": {"GET": "org:read"}, "get": lambda s, r: None, "post": lambda s, r: 1},
        )


def test_an_entry_needs_a_handler_and_a_permission():
    with pytest.raises(TypeError, match="names DELETE but has no handler"):
        type("GhostApi", (ApiView,), {"required": {"DELETE": "org:read"}})
    with pytest.raises(TypeError, match="is not a permission"):
        type("VagueApi", (ApiView,), {"required": {"GET": "everything"}, "get": lambda s, r: 1})
    with pytest.raises(TypeError, match="unknown method"):
        type("OddApi", (ApiView,), {"required": {"TRACE": "org:read"}})


def test_every_api_route_is_an_api_view():
    """Other apps' endpoints too: nothing under /api/v1/ escapes the declared permissions."""

    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                yield prefix + str(pattern.pattern), pattern.callback

    routes = [
        (route, callback)
        for route, callback in walk(get_resolver("portal.urls_tenant").url_patterns)
        if route.startswith("api/v1/")
    ]
    assert len(routes) == 35
    for route, callback in routes:
        view_class = getattr(callback, "view_class", None)
        assert view_class is not None and issubclass(view_class, ApiView), route
        assert view_class.required, route


# The one check, for every scheme -----------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "get_status", "post_status"),
    [("viewer", 200, 403), ("member", 200, 403), ("admin", 200, 201), ("owner", 200, 201)],
)
def test_sessions_and_tokens_hold_their_roles_permissions(
    probe_urls, org, client_for, role, get_status, post_status
):
    session = client_for(org, org.user(role))
    token = bearer(token_pair(org, org.user(role)).access)
    for client, headers, scheme in ((session, {}, "session"), (client_for(org), token, "jwt")):
        got = client.get(PROBE, **headers)
        assert got.status_code == get_status
        assert got.json() == {"scheme": scheme, "actor": "user"}
        posted = post_json(client, PROBE, {"count": 1}, **headers)
        assert posted.status_code == post_status
        if post_status == 403:
            assert error_code(posted) == "permission_denied"


def test_a_key_holds_its_scopes(probe_urls, org, client_for):
    _, reader = api_key(org, ["org:read"])
    _, inviter = api_key(org, ["members:invite"])
    client = client_for(org)
    assert client.get(PROBE, **api_key_header(reader)).json() == {
        "scheme": "api_key",
        "actor": "api_key",
    }
    assert post_json(client, PROBE, {"count": 1}, **api_key_header(reader)).status_code == 403
    assert client.get(PROBE, **api_key_header(inviter)).status_code == 403
    assert post_json(client, PROBE, {"count": 1}, **api_key_header(inviter)).status_code == 201


def test_public_methods_need_no_credential_and_others_need_one(probe_urls, org, client_for):
    client = client_for(org)
    assert client.delete(PROBE).json() == {"actor": "anonymous"}
    response = client.get(PROBE)
    assert response.status_code == 401
    assert error_code(response) == "not_authenticated"
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_undeclared_methods_are_405(probe_urls, org, client_for):
    client = client_for(org, org.owner)
    for response in (client.put(PROBE), client.patch(PROBE), client.options(PROBE)):
        assert response.status_code == 405
        assert error_code(response) == "method_not_allowed"


# One error shape ---------------------------------------------------------------------------


def test_field_errors(probe_urls, org, client_for):
    response = post_json(client_for(org, org.owner), PROBE, {"count": 0, "extra": 1})
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "invalid",
            "message": "The request is invalid.",
            "detail": {"extra": ["Unknown field."]},
        }
    }


def test_malformed_json_and_wrong_content_type(probe_urls, org, client_for):
    client = client_for(org, org.owner)
    malformed = client.post(PROBE, data="{nope", content_type="application/json")
    assert malformed.status_code == 400 and error_code(malformed) == "parse_error"
    form = client.post(PROBE, data={"count": 1})
    assert form.status_code == 415 and error_code(form) == "unsupported_media_type"


def test_service_errors_become_api_errors(probe_urls, org, client_for):
    client = client_for(org)
    invalid = client.get("/api/v1/errors/validation/")
    assert invalid.status_code == 400
    assert invalid.json()["error"]["detail"] == {"name": ["Too long."]}
    missing = client.get("/api/v1/errors/missing/")
    assert missing.status_code == 404 and error_code(missing) == "not_found"


def test_an_unexpected_error_is_a_json_500_without_details(probe_urls, org):
    client = Client(HTTP_HOST=org.host, raise_request_exception=False)
    response = client.get("/api/v1/errors/crash/")
    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "code": "server_error",
            "message": "Something went wrong on our side.",
            "detail": None,
        }
    }


def test_unknown_api_paths_are_json_404(org, client_for):
    for path in ("/api/v1/nothing-here/", "/api/v2/", "/api/"):
        response = client_for(org).get(path)
        assert response.status_code == 404
        assert error_code(response) == "not_found"


def test_portal_404s_stay_pages(org, client_for):
    response = client_for(org).get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_paginated_lists(org, client_for):
    from tests.credentials.helpers import api_key as make_key

    for number in range(3):
        make_key(org, ["org:read"], name=f"k{number}")
    headers = bearer(token_pair(org, org.admin).access)
    page = client_for(org).get("/api/v1/api-keys/?page_size=2&page=2", **headers).json()
    assert page["count"] == 3
    assert [key["name"] for key in page["results"]] == ["k0"]
    beyond = client_for(org).get("/api/v1/api-keys/?page=9", **headers)
    assert beyond.status_code == 404 and error_code(beyond) == "not_found"
