"""The dashboard's first-run checklist and its recent activity, told in words from the audit log."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from django.urls import NoReverseMatch, reverse

from agents import selectors as agent_selectors
from audit import selectors as audit_selectors
from core.actors import Actor
from core.pages import resource_url
from credentials import selectors as credential_selectors

# --- First steps -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    title: str
    help: str
    is_done: bool
    url: str | None  # where to do it, when the viewer may


def _url(name: str, *args: Any) -> str | None:
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return None


def first_steps(*, actor: Actor) -> list[Step]:
    """Agent, key, runtime, first task: each ticked from the organization's real state."""
    pool = agent_selectors.pool_get(actor=actor)
    has_agent = pool.agents > 0
    has_key = credential_selectors.api_key_active_exists(actor=actor)
    has_runtime = agent_selectors.instance_ever_started(actor=actor)
    has_task = audit_selectors.action_recorded(actor=actor, action="task.published")
    return [
        Step(
            "Create an agent",
            "Name it, pick its type, and what each instance gets (CPU, memory).",
            has_agent,
            _url("agents:agent-create") if actor.can("agents:write") else None,
        ),
        Step(
            "Create an API key",
            "With the scopes agents:read and agents:write, for the runtime.",
            has_key,
            _url("credentials:api-key-list") if actor.can("api_keys:manage") else None,
        ),
        Step(
            "Run a runtime",
            "manage.py run_agent --url … --key … --agent <id> serves the agent; its page "
            "shows the instance turn running.",
            has_runtime,
            _url("agents:agent-list") if actor.can("agents:read") else None,
        ),
        Step(
            "Publish a first task",
            "POST /api/v1/tasks/ with a key holding tasks:publish; the runtime answers it.",
            has_task,
            _url("api-docs"),
        ),
    ]


# --- Recent activity -------------------------------------------------------------------------

# Actions too frequent to be news on a dashboard (each API call, each token refresh).
QUIET_ACTIONS = {"api_key.used", "token.issued", "token.refreshed", "instance.reported"}

PHRASES = {
    "agent.created": "created the agent {name}",
    "agent.updated": "changed the agent {name}",
    "agent.deleted": "deleted the agent {name}",
    "instance.requested": "started an instance of {agent}",
    "instance.running": "reported instance {short} running",
    "instance.stopped": "stopped instance {short}",
    "instance.stopping": "is stopping instance {short}",
    "instance.failed": "reported instance {short} failed",
    "config.changed": "changed the config key {key}",
    "api_key.created": "created an API key",
    "api_key.revoked": "revoked an API key",
    "member.created": "added a member",
    "member.role_changed": "changed a member's role",
    "member.deactivated": "deactivated a member",
    "member.reactivated": "reactivated a member",
    "invitation.created": "invited someone",
    "invitation.accepted": "accepted an invitation",
    "invitation.revoked": "revoked an invitation",
    "auth.login": "signed in",
    "auth.failed": "failed to sign in",
    "organization.created": "created the organization",
    "organization.updated": "changed the organization",
    "organization.limits_changed": "changed the organization's limits",
    "organization.suspended": "suspended the organization",
    "organization.reactivated": "reactivated the organization",
    "audit.exported": "exported the audit log",
    "audit.verified": "verified the audit log",
    "task.published": "published a task",
    "user.profile_changed": "changed their display name",
    "user.password_changed": "changed their password",
    "user.sessions_ended": "signed out of their other sessions",
    "invitation.resent": "sent an invitation again",
    "audit.alert_acknowledged": "acknowledged an alert",
    "scaling.decided": "scaled the agent {name}",
    "scaling.policy_changed": "changed the scaling policy of {name}",
    "support.session_opened": "opened a platform support session",
    "support.session_joined": "entered the portal in a support session",
    "support.request": "opened a page in a support session",
    "support.session_ended": "ended a platform support session",
}


@dataclass(frozen=True)
class Activity:
    when: Any
    who: str
    what: str
    url: str | None
    result: str
    action: str
    times: int = 1  # the same person doing the same thing in a row counts as one line


def _link(event: Any) -> str | None:
    if event.action == "agent.deleted":
        return None
    return resource_url(event.resource_type, event.resource_id, event.details)


def describe(event: Any) -> Activity:
    """One audit event as a sentence: who, what (with the resource's name), where to look."""
    details = event.details if isinstance(event.details, dict) else {}
    phrase = PHRASES.get(event.action)
    values = {
        "name": f"“{details.get('name', '')}”" if details.get("name") else "",
        "agent": f"“{details['agent']}”" if details.get("agent") else "an agent",
        "short": str(event.resource_id)[:8],
        "key": details.get("key") or event.resource_id,
    }
    what = phrase.format(**values).replace("  ", " ") if phrase else event.action
    if event.result != "success":
        what = f"was refused: {what}" if event.result == "denied" else f"failed: {what}"
    return Activity(
        when=event.occurred_at,
        who=event.actor_label or event.actor_kind,
        what=what,
        url=_link(event),
        result=event.result,
        action=event.action,
    )


def recent_activity(*, actor: Actor, limit: int = 8) -> list[Activity] | None:
    """The latest changes in words, or None when the viewer may not read the audit log."""
    if not actor.can("audit:read"):
        return None
    page = audit_selectors.event_list(actor=actor, limit=60)
    lines: list[Activity] = []
    for event in page.events:
        if event.action in QUIET_ACTIONS:
            continue
        line = describe(event)
        last = lines[-1] if lines else None
        if last and (last.who, last.what, last.url) == (line.who, line.what, line.url):
            lines[-1] = replace(last, times=last.times + 1)
            continue
        if len(lines) == limit:
            break
        lines.append(line)
    return lines
