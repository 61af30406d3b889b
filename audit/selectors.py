"""Reads of the audit log worth naming: filtered, newest-first pages with a keyset cursor."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from audit.models import Alert, AlertRule, AuditEvent, Result
from core.actors import Actor

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
# "support": platform staff in a support session (organizations.support).
ACTOR_KINDS = ("user", "api_key", "staff", "support", "system", "anonymous")
_TEXT_LIMITS = {
    "actor": 254,
    "actor_id": 64,
    "actor_kind": 16,
    "action": 64,
    "resource_type": 64,
    "resource_id": 128,
}


def parse_moment(value: str) -> dt.datetime:
    """An ISO 8601 date or date-time; naive values are UTC. Raises ValueError."""
    value = value.strip()
    moment = parse_datetime(value)
    if moment is None:
        day = parse_date(value)
        if day is None:
            raise ValueError(value)
        moment = dt.datetime.combine(day, dt.time.min)
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=dt.UTC)
    try:
        # In UTC: PostgreSQL refuses offsets beyond ±15:59 that Python accepts.
        return moment.astimezone(dt.UTC)
    except OverflowError as error:
        raise ValueError(value) from error


@dataclass(frozen=True)
class EventFilters:
    """What a list or an export is narrowed to: exact matches, and time in [start, end)."""

    actor: str = ""  # the actor's label: a user's email, an API key's name
    actor_id: str = ""
    actor_kind: str = ""
    action: str = ""
    resource_type: str = ""
    resource_id: str = ""
    result: str = ""
    start: dt.datetime | None = None
    end: dt.datetime | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, str], *, strict: bool = False) -> EventFilters:
        """Build from query parameters; raises ValidationError keyed by parameter.

        A blank parameter means "no filter" (what an HTML form sends); with `strict` (the API), a
        blank date or choice is refused, as its documented format says.
        """
        errors: dict[str, list[Any]] = {}
        if strict:
            for name in ("start", "end", "result", "actor_kind"):
                if name in params and not (params.get(name) or "").strip():
                    errors[name] = ["Leave it out rather than blank."]
        values: dict[str, object] = {}
        for name, limit in _TEXT_LIMITS.items():
            value = (params.get(name) or "").strip()
            if len(value) > limit:
                errors[name] = [f"At most {limit} characters."]
            elif "\x00" in value:
                errors[name] = ["Contains a NUL character."]
            values[name] = value
        if values["actor_kind"] and values["actor_kind"] not in ACTOR_KINDS:
            errors["actor_kind"] = [f"One of: {', '.join(ACTOR_KINDS)}."]
        result = (params.get("result") or "").strip()
        if result and result not in Result.values:
            errors["result"] = [f"One of: {', '.join(Result.values)}."]
        values["result"] = result
        for name in ("start", "end"):
            raw = (params.get(name) or "").strip()
            values[name] = None
            if raw and name not in errors:
                try:
                    values[name] = parse_moment(raw)
                except ValueError:
                    errors[name] = [
                        "Use an ISO 8601 date or date-time, such as 2026-01-31 or "
                        "2026-01-31T12:00:00Z."
                    ]
        if not errors and values["start"] and values["end"] and values["start"] >= values["end"]:
            # Well-formed, an empty range: 422 (core.errors.UNPROCESSABLE_CODES).
            errors["end"] = [
                ValidationError("The end must be after the start.", code="invalid_range")
            ]
        if errors:
            raise ValidationError(errors)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def is_empty(self) -> bool:
        return not any(getattr(self, item.name) for item in fields(self))

    def as_params(self) -> dict[str, str]:
        """The non-empty filters as query parameters (for links and the next page)."""
        params = {}
        for name, value in asdict(self).items():
            if value:
                params[name] = value.isoformat() if isinstance(value, dt.datetime) else value
        return params

    def apply(self, queryset: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
        exact = {
            "actor_label": self.actor,
            "actor_id": self.actor_id,
            "actor_kind": self.actor_kind,
            "action": self.action,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "result": self.result,
        }
        queryset = queryset.filter(**{field: value for field, value in exact.items() if value})
        if self.start is not None:
            queryset = queryset.filter(occurred_at__gte=self.start)
        if self.end is not None:
            queryset = queryset.filter(occurred_at__lt=self.end)
        return queryset


@dataclass(frozen=True)
class EventPage:
    events: list[AuditEvent]
    next_cursor: int | None
    newer_cursor: int | None = None  # `after` for the page of newer events, when there are some


DIGITS = re.compile(r"[0-9]+")


# A sequence from 1, 18 digits at most (a bigint); blank means the first page.
CURSOR_PATTERN = r"^([1-9][0-9]{0,17})?$"


def parse_cursor(value: str | None) -> int | None:
    """The keyset cursor: the sequence the next page starts below. Raises ValidationError."""
    if value in (None, ""):
        return None
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses (it was a 500).
    if not re.fullmatch(CURSOR_PATTERN, value):
        raise ValidationError({"cursor": ["Not a valid cursor."]})
    return int(value)


def parse_limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_PAGE_SIZE
    if not DIGITS.fullmatch(value) or len(value) > 6 or not 1 <= int(value) <= MAX_PAGE_SIZE:
        raise ValidationError({"limit": [f"A number from 1 to {MAX_PAGE_SIZE}."]})
    return int(value)


def require_audit_read(actor: Actor, action: str) -> None:
    """Refuse (and record the refusal) unless `actor` may read the audit log."""
    if actor.can("audit:read"):
        return
    from audit.services import deny

    deny(
        actor=actor,
        action=action,
        resource_type="audit_log",
        reason="You cannot read the audit log.",
    )


def event_list(
    *,
    actor: Actor,
    filters: EventFilters = EventFilters(),  # noqa: B008 (frozen, immutable)
    cursor: int | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
    after: int | None = None,
    with_newer: bool = False,
) -> EventPage:
    """One page of sealed events, newest first: those with `sequence < cursor` when a cursor is
    given, or the `limit` events just newer than `after` (paging back towards the newest). With
    `with_newer`, a cursor page also says whether newer events exist (one more query). An event
    shows once the sealer chained it, normally milliseconds after its commit.

    Keyset pagination: every page is one index range scan whatever its depth, and a page does not
    shift when new events arrive.
    """
    require_audit_read(actor, "audit.read")
    queryset = filters.apply(AuditEvent.objects.filter(sequence__isnull=False))
    if after is not None:
        rows = list(queryset.filter(sequence__gt=after).order_by("sequence")[: limit + 1])
        has_newer = len(rows) > limit
        page = list(reversed(rows[:limit]))
        return EventPage(
            events=page,
            next_cursor=page[-1].sequence if page else after + 1,
            newer_cursor=page[0].sequence if has_newer and page else None,
        )
    if cursor is not None:
        queryset = queryset.filter(sequence__lt=cursor)
    rows = list(queryset.order_by("-sequence")[: limit + 1])
    next_cursor = rows[limit - 1].sequence if len(rows) > limit else None
    page = rows[:limit]
    newer_cursor = None
    if with_newer and cursor is not None and page:
        has_newer = filters.apply(AuditEvent.objects.filter(sequence__gt=page[0].sequence)).exists()
        newer_cursor = page[0].sequence if has_newer else None
    return EventPage(events=page, next_cursor=next_cursor, newer_cursor=newer_cursor)


def action_recorded(*, actor: Actor, action: str) -> bool:
    """Whether the log holds a successful `action` (onboarding: "a first task was published").
    Says only that, so any member may ask."""
    return AuditEvent.objects.filter(action=action, result="success").exists()


def alert_list(*, actor: Actor, limit: int = DEFAULT_PAGE_SIZE) -> list[Alert]:
    require_audit_read(actor, "audit.read")
    return list(Alert.objects.select_related("rule").order_by("-id")[:limit])


def alert_rule_list(*, actor: Actor) -> list[AlertRule]:
    require_audit_read(actor, "audit.read")
    return list(AlertRule.objects.order_by("name"))
