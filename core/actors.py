"""Who did something: the acting principal every service takes first (`actor=`), and the verified
credential a request or socket carries (`Credential`, DRF's `request.auth`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.roles import permissions_for


@dataclass(frozen=True)
class Actor:
    """A user, an API key, platform staff, or the system, plus where the request came from."""

    # "support": a staff member reading an organization's portal in a support session
    kind: str  # "user" | "api_key" | "staff" | "support" | "system" | "anonymous"
    id: str = ""
    label: str = ""
    role: str = ""
    permissions: frozenset[str] = field(default_factory=frozenset)
    ip: str | None = None
    user_agent: str = ""
    user: Any = field(default=None, compare=False, repr=False)

    def can(self, permission: str) -> bool:
        return self.kind == "system" or permission in self.permissions

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        return cls(kind="system", label=label)

    @classmethod
    def anonymous(cls, request: Any = None, *, scope: dict[str, Any] | None = None) -> Actor:
        meta = scope_meta(scope) if scope is not None else request_meta(request)
        return cls(kind="anonymous", label="anonymous", **meta)

    @classmethod
    def for_user(
        cls, user: Any, request: Any = None, *, permissions: frozenset[str] | None = None
    ) -> Actor:
        """A person; `permissions` defaults to their role's (a credential may carry fewer)."""
        if permissions is None:
            permissions = permissions_for(user.role) if user.is_active else frozenset()
        return cls(
            kind="staff" if user.is_staff else "user",
            id=str(user.pk),
            label=user.email,
            role=user.role,
            permissions=permissions,
            user=user,
            **request_meta(request),
        )

    @classmethod
    def for_api_key(cls, key: Any, permissions: frozenset[str], request: Any = None) -> Actor:
        return cls(
            kind="api_key",
            id=str(key.pk),
            label=f"{key.name} ({key.prefix})",
            permissions=permissions,
            **request_meta(request),
        )

    @classmethod
    def from_request(cls, request: Any) -> Actor:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            if getattr(user, "is_support", False):
                return user.actor(request)  # organizations.support.SupportPrincipal
            return cls.for_user(user, request)
        return cls.anonymous(request)


def request_meta(request: Any) -> dict[str, Any]:
    """Where a request came from, as an actor records it."""
    if request is None:
        return {}
    return {
        "ip": request.META.get("REMOTE_ADDR"),
        "user_agent": request.META.get("HTTP_USER_AGENT", "")[:256],
    }


def scope_meta(scope: dict[str, Any]) -> dict[str, Any]:
    """Where a WebSocket connection came from (its ASGI scope), as an actor records it."""
    client = scope.get("client") or (None, None)
    agent = ""
    for name, value in scope.get("headers", []):
        if name == b"user-agent":
            agent = value.decode("latin-1")[:256]
    return {"ip": client[0], "user_agent": agent}


@dataclass(frozen=True)
class Credential:
    """A verified session, JWT or API key: the organization it is valid in and what it may do.

    `core.permissions.RequiredPermission` checks a view's declared permission against
    `permissions`, the one check for every scheme (credentials.authentication builds them).
    """

    scheme: str  # "session" | "jwt" | "api_key"
    tenant: Any
    permissions: frozenset[str]
    user: Any = field(default=None, repr=False)
    api_key: Any = field(default=None, repr=False)
    claims: dict[str, Any] = field(default_factory=dict, repr=False)

    def actor(self, request: Any = None) -> Actor:
        if self.scheme == "api_key":
            return Actor.for_api_key(self.api_key, self.permissions, request)
        return Actor.for_user(self.user, request, permissions=self.permissions)
