"""Adds the RateLimit headers of the policy a request counted against to its response."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


def rate_limit_headers(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable:
    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        for name, value in getattr(request, "rate_limit_headers", {}).items():
            if name not in response:
                response[name] = value
        return response

    return middleware
