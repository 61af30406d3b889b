"""Rules an organization's slug, region and plan must follow before anything is written."""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError

SLUG_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{1,38})[a-z0-9]$")
RESERVED_SLUGS = frozenset(
    {
        "www",
        "admin",
        "api",
        "public",
        "static",
        "media",
        "ws",
        "wss",
        "app",
        "mail",
        "smtp",
        "imap",
        "ftp",
        "ssh",
        "root",
        "status",
        "docs",
        "help",
        "support",
        "billing",
        "login",
        "signup",
        "auth",
        "oauth",
        "sso",
        "cdn",
        "assets",
        "dashboard",
        "portal",
        "platform",
        "staff",
        "system",
        "internal",
        "test",
        "localhost",
        "pg",
        "postgres",
        "redis",
        "spare",
        "information-schema",
        "pg-catalog",
        "pg-toast",
        "security",
        "abuse",
        "noc",
    }
)


def validate_slug(slug: str) -> None:
    if not SLUG_PATTERN.match(slug):
        raise ValidationError(
            "Use 3-40 lowercase letters, digits and hyphens, not starting or ending with a hyphen.",
            code="invalid_slug",
        )
    if "--" in slug:
        raise ValidationError("Use single hyphens only.", code="invalid_slug")
    if slug in RESERVED_SLUGS:
        raise ValidationError(f"“{slug}” is reserved. Pick another name.", code="reserved_slug")


def validate_region(region: str) -> None:
    if region not in settings.REGIONS:
        known = ", ".join(settings.REGIONS)
        raise ValidationError(f"Unknown region “{region}”. Known: {known}.", code="invalid_region")


def schema_name_for(slug: str) -> str:
    """The schema of the organization with this slug (`t_` + slug with `_` for `-`)."""
    return "t_" + slug.replace("-", "_")
