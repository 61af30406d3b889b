"""Portal pages of the audit log: events, export, verification, alerts and alert rules."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.handlers.asgi import ASGIRequest
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from audit import exports, selectors, services
from audit import verify as audit_verify
from audit.models import Alert, AlertRule, Result
from audit.selectors import ACTOR_KINDS, EventFilters
from core import errors
from core.actors import Actor
from core.pages import resource_url
from tenants import context


def _filter_context(request: HttpRequest, filters: EventFilters, errors: dict) -> dict:
    return {
        "filters": filters,
        "raw": {name: request.GET.get(name, "") for name in EventFilters.__dataclass_fields__},
        "errors": errors,
        "results": Result.values,
        "actor_kinds": ACTOR_KINDS,
        "formats": list(exports.FORMATS),
    }


@login_required
@require_GET
def events(request: HttpRequest) -> HttpResponse:
    actor = Actor.from_request(request)
    errors: dict[str, list[str]] = {}
    try:
        filters = EventFilters.from_params(request.GET)
        cursor = selectors.parse_cursor(request.GET.get("cursor"))
        after = selectors.parse_cursor(request.GET.get("after"))
    except ValidationError as error:
        selectors.require_audit_read(actor, "audit.read")
        errors = error.message_dict
        page = selectors.EventPage(events=[], next_cursor=None)
        filters = EventFilters()
    else:
        page = selectors.event_list(
            actor=actor, filters=filters, cursor=cursor, after=after, with_newer=True
        )
    next_url = newer_url = ""
    if page.newer_cursor is not None:
        newer_url = "?" + urlencode({**filters.as_params(), "after": page.newer_cursor})
    if page.next_cursor is not None:
        next_url = "?" + urlencode({**filters.as_params(), "cursor": page.next_cursor})
    context_data = {
        **_filter_context(request, filters, errors),
        "page": page,
        "rows": [
            {
                "event": event,
                "details": json.dumps(event.details, indent=2, sort_keys=True),
                "changes": _changes(event.details),
                "url": resource_url(event.resource_type, event.resource_id, event.details),
            }
            for event in page.events
        ],
        "next_url": next_url,
        "newer_url": newer_url,
        "is_first_page": not (request.GET.get("cursor") or request.GET.get("after")),
        "start_value": _local_input(filters.start),
        "end_value": _local_input(filters.end),
        "first_url": "?" + urlencode(filters.as_params()),
    }
    return render(request, "audit/events.html", context_data, status=400 if errors else 200)


def _local_input(moment) -> str:
    """A filter time as a datetime-local input's value (UTC, to the second when it has them)."""
    if moment is None:
        return ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S" if moment.second else "%Y-%m-%dT%H:%M")


def _changes(details: object) -> list[tuple[str, str, str]]:
    """(what, before, after) of a change the event recorded: `{"from", "to"}` at the top (a role,
    an instance's status) or per field under `changes` (an agent's definition)."""
    if not isinstance(details, dict):
        return []

    def shown(value: object) -> str:
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)

    rows = []
    if "from" in details:
        label = "role" if "to" in details and "email" in details else "status"
        after = details.get("to", details.get("status", ""))
        rows.append((label, shown(details["from"]), shown(after)))
    changes = details.get("changes")
    if isinstance(changes, dict):
        for field, change in sorted(changes.items()):
            if isinstance(change, dict) and "from" in change:
                rows.append((field, shown(change["from"]), shown(change.get("to"))))
            elif isinstance(change, dict):
                rows.append((field, "…", f"changed ({shown(change)})"))
    return rows


@login_required
@require_POST
def export(request: HttpRequest) -> HttpResponse:
    """Download the (filtered) log. POST, because an export is a recorded, alertable action."""
    actor = Actor.from_request(request)
    try:
        filters = EventFilters.from_params(request.POST)
        recorded = exports.audit_log_export(
            actor=actor, format=request.POST.get("format", ""), filters=filters
        )
    except ValidationError as error:
        selectors.require_audit_read(actor, "audit.exported")
        for messages_ in error.message_dict.values():
            for message in messages_:
                messages.error(request, message)
        return redirect("audit:event-list")
    except errors.RateLimited as error:
        minutes = max(1, round(error.retry_after / 60))
        messages.error(request, f"Too many exports: try again in {minutes} minute(s).")
        return redirect("audit:event-list")
    except errors.RateLimiterUnavailable:
        messages.error(request, "Exports are unavailable right now: try again shortly.")
        return redirect("audit:event-list")
    return export_response(request, recorded)


def export_response(request: HttpRequest, recorded: exports.Export) -> StreamingHttpResponse:
    """Stream an export: each chunk is produced on demand, in the organization's context.

    Under ASGI the body must be an async iterator, or Django would collect a sync one into a list
    first (the whole log in memory); under WSGI it must be a sync one, for the same reason.
    """
    step = _in_context(context.current_tenant(), recorded.chunks())
    body: Iterator[str] | AsyncIterator[str]
    body = _async_body(step) if isinstance(request, ASGIRequest) else _sync_body(step)
    response = StreamingHttpResponse(body, content_type=recorded.content_type)
    response["Content-Disposition"] = f'attachment; filename="{recorded.filename}"'
    response["Cache-Control"] = "no-store"
    response["X-Accel-Buffering"] = "no"  # a proxy must pass chunks on, not buffer the body
    return response


def _in_context(tenant, chunks: Iterator[str]) -> Callable[[], str | None]:
    """A function that advances `chunks` by one inside `tenant`'s context (None at the end).

    The context is entered per step, not across yields: a streamed body is consumed after the
    view returned, possibly from another thread or async task.
    """

    def step() -> str | None:
        enter = context.tenant_context(tenant) if tenant is not None else context.public_context()
        with enter:
            return next(chunks, None)

    return step


def _sync_body(step: Callable[[], str | None]) -> Iterator[str]:
    while (chunk := step()) is not None:
        yield chunk


async def _async_body(step: Callable[[], str | None]) -> AsyncIterator[str]:
    astep = sync_to_async(step, thread_sensitive=True)
    while (chunk := await astep()) is not None:
        yield chunk


@login_required
@require_POST
def verify(request: HttpRequest) -> HttpResponse:
    report = audit_verify.audit_log_verify(actor=Actor.from_request(request))
    return render(request, "audit/verify.html", {"report": report})


@login_required
@require_GET
def alerts(request: HttpRequest) -> HttpResponse:
    rows = selectors.alert_list(actor=Actor.from_request(request))
    return render(request, "audit/alerts.html", {"alerts": rows})


@login_required
@require_POST
def alert_acknowledge(request: HttpRequest, alert_id: int) -> HttpResponse:
    actor = Actor.from_request(request)
    try:
        alert = services.alert_acknowledge(actor=actor, alert_id=alert_id)
    except Alert.DoesNotExist as error:
        raise Http404("No such alert.") from error
    messages.success(request, f"Alert “{alert.summary}” acknowledged.")
    return redirect("audit:alert-list")


@login_required
@require_GET
def rules(request: HttpRequest) -> HttpResponse:
    actor = Actor.from_request(request)
    rows = selectors.alert_rule_list(actor=actor)
    return render(
        request,
        "audit/rules.html",
        {"rules": rows, "can_change": actor.can("settings:write")},
    )


@login_required
@require_POST
def rule_set_active(request: HttpRequest, rule_id: int) -> HttpResponse:
    wanted = request.POST.get("is_active")
    if wanted not in {"on", "off"}:
        messages.error(request, "Choose on or off.")
        return redirect("audit:rule-list")
    try:
        rule = services.alert_rule_set_active(
            actor=Actor.from_request(request), rule_id=rule_id, is_active=wanted == "on"
        )
    except AlertRule.DoesNotExist as error:
        raise Http404("No such rule.") from error
    state = "on" if rule.is_active else "off"
    messages.success(request, f"“{rule.name}” is {state}.")
    return redirect("audit:rule-list")
