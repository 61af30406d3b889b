"""Template helpers of the portal's look: links to the public host, initials for avatars."""

from __future__ import annotations

import re

from django import template
from django.conf import settings
from django.utils.html import escape, format_html_join
from django.utils.safestring import SafeString

register = template.Library()


@register.simple_tag
def public_url(path: str = "/") -> str:
    """An absolute URL on the public host (usable from an organization's host too)."""
    port = f":{settings.PORTAL_PORT}" if settings.PORTAL_PORT else ""
    return f"{settings.PORTAL_SCHEME}://{settings.PORTAL_DOMAIN}{port}{path}"


@register.filter
def short_name(user) -> str:
    """What the top bar calls the user: the first name, else the email's local part."""
    name = (getattr(user, "full_name", "") or "").strip()
    if name:
        return name.split()[0]
    return (getattr(user, "email", "") or "").split("@")[0]


@register.filter
def initials(user) -> str:
    """One or two letters for a user's avatar: from the full name, else the email."""
    name = (getattr(user, "full_name", "") or "").strip()
    if name:
        parts = name.split()
        letters = parts[0][0] + (parts[-1][0] if len(parts) > 1 else "")
    else:
        letters = (getattr(user, "email", "") or "?")[0]
    return letters.upper()


@register.filter
def break_at_separators(value: object) -> SafeString:
    """A path or key that may wrap after its separators (`/limits/tokens`, `agents.defaults`)
    rather than in the middle of a word: each piece escaped, a <wbr> after each separator."""
    pieces = re.split(r"(?<=[/._])", str(value))
    return format_html_join("", "{}<wbr>", ((piece,) for piece in pieces[:-1])) + escape(pieces[-1])
