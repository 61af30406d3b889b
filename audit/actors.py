"""Who did something: the acting principal every service function takes first (`actor=`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Actor:
    """A user, an API key, platform staff, or the system, plus where the request came from."""

    kind: str  # "user" | "api_key" | "staff" | "system" | "anonymous"
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
    def anonymous(cls, request: Any = None) -> Actor:
        return cls(kind="anonymous", label="anonymous", **_request_meta(request))

    @classmethod
    def for_user(cls, user: Any, request: Any = None) -> Actor:
        from accounts.roles import permissions_for

        kind = "staff" if user.is_staff else "user"
        return cls(
            kind=kind,
            id=str(user.pk),
            label=user.email,
            role=user.role,
            permissions=permissions_for(user.role) if user.is_active else frozenset(),
            user=user,
            **_request_meta(request),
        )

    @classmethod
    def from_request(cls, request: Any) -> Actor:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return cls.for_user(user, request)
        return cls.anonymous(request)


def _request_meta(request: Any) -> dict[str, Any]:
    if request is None:
        return {}
    return {
        "ip": request.META.get("REMOTE_ADDR"),
        "user_agent": request.META.get("HTTP_USER_AGENT", "")[:256],
    }
