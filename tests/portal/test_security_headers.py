"""Security headers on pages and the API: a content security policy without inline script,
HSTS in production (HTTPS), nosniff, frame denial, referrer policy."""

from __future__ import annotations

from django.test import Client


def test_pages_and_api_carry_the_headers(org, client_for):
    for path in ("/login/", "/api/v1/agents/", "/api/docs/"):
        response = client_for(org).get(path)
        policy = response["Content-Security-Policy"]
        assert (
            "script-src 'self'" in policy
            and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
        )
        assert "frame-ancestors 'none'" in policy
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["X-Frame-Options"] == "DENY"
        assert response["Referrer-Policy"] == "same-origin"


def test_the_api_docs_load_their_script_from_a_url(org, client_for):
    page = client_for(org).get("/api/docs/").content.decode()
    assert "<script>" not in page.replace(" ", "")
    assert "?script=" in page or "script_url" not in page


def test_hsts_in_production_over_https(org, settings):
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_HSTS_PRELOAD = True
    response = Client(HTTP_HOST=org.host).get("/login/", secure=True)
    assert response["Strict-Transport-Security"] == ("max-age=31536000; includeSubDomains; preload")
