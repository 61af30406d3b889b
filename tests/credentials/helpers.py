"""Helpers for the API identity tests: JSON requests, tokens and API keys for session orgs."""

from __future__ import annotations

import json
from typing import Any

from core.actors import Actor
from credentials import services
from tenants import context


def post_json(client, path: str, data: Any, **extra):
    return client.post(path, data=json.dumps(data), content_type="application/json", **extra)


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def api_key_header(raw: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Api-Key {raw}"}


def token_pair(org, user) -> services.TokenPair:
    tenant = getattr(org, "tenant", org)
    with context.tenant_context(tenant):
        return services.token_pair_issue(actor=Actor.for_user(user), user=user)


def api_key(org, scopes: list[str], *, user=None, name: str = "test key", expires_at=None):
    """(ApiKey, raw) created by `user` (default: the org's admin) through the service."""
    tenant = getattr(org, "tenant", org)
    creator = user if user is not None else org.admin
    with context.tenant_context(tenant):
        return services.api_key_create(
            actor=Actor.for_user(creator), name=name, scopes=scopes, expires_at=expires_at
        )


def error_code(response) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "detail"}, body
    return body["error"]["code"]
