"""Portal pages: agents (list, create, edit, detail with instances), the resource pool, config."""

from __future__ import annotations

import difflib
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from agents import selectors, services
from agents.configuration import (
    AGENTS_NAMESPACE,
    BUILT_IN_AGENT_TYPES,
    validate_agent_type,
)
from agents.forms import AgentForm, ConfigForm, apply_service_errors, pretty
from agents.models import Agent, AgentInstance, ConfigKey, ConfigVersion, InstanceStatus
from agents.resources import format_cpu, format_memory
from core.actors import Actor
from core.agent_permissions import CATALOGUE
from core.errors import QuotaExceeded
from core.pages import requires

PAGE_SIZE = 20
CONFIG_PAGE_SIZE = 25
STOPPED_SHOWN = 10
SHOWN_LIVE = {InstanceStatus.PENDING, InstanceStatus.RUNNING, InstanceStatus.STOPPING}


def _agent_or_404(actor: Actor, agent_id: Any) -> Agent:
    try:
        return selectors.agent_get(actor=actor, agent_id=agent_id)
    except Agent.DoesNotExist as error:
        raise Http404("No such agent.") from error


def _pool_context(actor: Actor, limits: selectors.Limits | None = None) -> dict[str, Any]:
    return {"pool": selectors.pool_get(actor=actor, limits=limits)}


def _type_choices(actor: Actor) -> list[str]:
    return sorted(set(BUILT_IN_AGENT_TYPES) | set(selectors.agent_types(actor=actor)))


# --- Agents ----------------------------------------------------------------------------------


@requires("agents:read")
def agent_list(request: HttpRequest, actor: Actor) -> HttpResponse:
    filters = {
        "type": request.GET.get("type", "").strip(),
        "status": request.GET.get("status", "").strip(),
        "q": request.GET.get("q", "").strip()[:80],
    }
    if filters["status"] not in ("", *selectors.AGENT_STATUSES):
        filters["status"] = ""
    if filters["type"]:
        try:
            validate_agent_type(filters["type"])
        except ValidationError:
            filters["type"] = ""  # no agent has such a type: show the unfiltered list
    agents = selectors.agent_list(
        actor=actor,
        agent_type=filters["type"] or None,
        status=filters["status"] or None,
        search=filters["q"] or None,
    )
    page = Paginator(agents, PAGE_SIZE).get_page(request.GET.get("page"))
    query = urlencode({name: value for name, value in filters.items() if value})
    return render(
        request,
        "agents/agent_list.html",
        {
            "page": page,
            "filters": filters,
            "query": query,
            "is_filtered": any(filters.values()),
            "types": selectors.agent_types(actor=actor),
            "statuses": selectors.AGENT_STATUSES,
            "can_write": actor.can("agents:write"),
            **_pool_context(actor),
        },
    )


def _agent_form_page(
    request: HttpRequest, actor: Actor, form: AgentForm, agent: Agent | None, status: int = 200
) -> HttpResponse:
    limits = selectors.limits_get()
    return render(
        request,
        "agents/agent_form.html",
        {
            "form": form,
            "agent": agent,
            "type_choices": _type_choices(actor),
            "permission_rows": [
                {
                    "name": name,
                    "description": description,
                    "is_allowed": name in limits.allowed_agent_permissions,
                    "is_checked": name in (form["permissions"].value() or []),
                }
                for name, description in CATALOGUE.items()
            ],
            "max_instance_cpu": format_cpu(limits.max_instance_cpu_millicores),
            "max_instance_memory": format_memory(limits.max_instance_memory_mb),
        },
        status=status,
    )


@requires("agents:write")
@require_http_methods(["GET", "POST"])
def agent_create(request: HttpRequest, actor: Actor) -> HttpResponse:
    if request.method == "GET":
        return _agent_form_page(
            request, actor, AgentForm(initial={"cpu": "0.5", "memory": "512MB"}), None
        )
    form = AgentForm(request.POST)
    if form.is_valid():
        try:
            agent = services.agent_create(actor=actor, **form.service_data())
        except ValidationError as error:
            apply_service_errors(form, error)
        except QuotaExceeded as error:
            form.add_error(None, error.message)
        else:
            messages.success(request, f"Agent “{agent.name}” created.")
            return redirect("agents:agent-detail", agent_id=agent.pk)
    else:
        form.add_service_checks()
    return _agent_form_page(request, actor, form, None, status=400)


@requires("agents:write")
@require_http_methods(["GET", "POST"])
def agent_edit(request: HttpRequest, actor: Actor, agent_id: Any) -> HttpResponse:
    agent = _agent_or_404(actor, agent_id)
    if request.method == "GET":
        return _agent_form_page(
            request, actor, AgentForm(initial=AgentForm.initial_for(agent)), agent
        )
    form = AgentForm(request.POST)
    if form.is_valid():
        try:
            services.agent_update(actor=actor, agent_id=agent.pk, **form.service_data())
        except Agent.DoesNotExist as error:
            raise Http404 from error
        except ValidationError as error:
            apply_service_errors(form, error)
        else:
            messages.success(request, f"Agent “{form.cleaned_data['name'].strip()}” saved.")
            return redirect("agents:agent-detail", agent_id=agent.pk)
    else:
        form.add_service_checks()
    return _agent_form_page(request, actor, form, agent, status=400)


@requires("agents:read")
def agent_detail(request: HttpRequest, actor: Actor, agent_id: Any) -> HttpResponse:
    agent = _agent_or_404(actor, agent_id)
    limits = selectors.limits_get()
    resolution = selectors.config_resolve(
        actor=actor, agent_type=agent.type, definition=agent.config
    )
    granted = selectors.granted_permissions(agent=agent, limits=limits)
    instances = list(selectors.instance_list(actor=actor, agent=agent)[:100])
    pool = selectors.pool_get(actor=actor, limits=limits)
    # What serves a pending instance: the reference runtime, attached to it by id.
    run_command = f"manage.py run_agent --url {request.tenant.url.rstrip('/')} --key <API key>"
    for instance in instances:
        instance.run_command = f"{run_command} --instance {instance.pk}"
    return render(
        request,
        "agents/agent_detail.html",
        {
            "agent": agent,
            # The table lists the instances still alive (a stopping one until its runtime
            # confirms); stopped and failed ones move below it.
            "instances": [instance for instance in instances if instance.status in SHOWN_LIVE],
            "stopped_instances": [
                instance for instance in instances if instance.status not in SHOWN_LIVE
            ][:STOPPED_SHOWN],
            "start_blocker": services.instance_room(pool=pool, agent=agent),
            "agent_namespace": services.instance_namespace(agent.pk),
            "granted": granted,
            "withheld": [name for name in agent.permissions if name not in granted],
            "resolution": resolution,
            "resolved_json": pretty(resolution.value),
            "can_write": actor.can("agents:write"),
            "cpu": format_cpu(agent.cpu_millicores),
            "memory": format_memory(agent.memory_mb),
            "pool": pool,
        },
    )


@requires("agents:write")
@require_POST
def agent_delete(request: HttpRequest, actor: Actor, agent_id: Any) -> HttpResponse:
    agent = _agent_or_404(actor, agent_id)
    try:
        services.agent_delete(actor=actor, agent_id=agent.pk)
    except Agent.DoesNotExist as error:
        raise Http404 from error
    messages.success(request, f"Agent “{agent.name}” deleted.")
    return redirect("agents:agent-list")


@requires("agents:write")
@require_POST
def instance_request(request: HttpRequest, actor: Actor, agent_id: Any) -> HttpResponse:
    agent = _agent_or_404(actor, agent_id)
    try:
        services.instance_request(actor=actor, agent_id=agent.pk)
    except Agent.DoesNotExist as error:
        raise Http404 from error
    except QuotaExceeded as error:
        messages.error(request, f"Instance not started: {error.message}")
    else:
        messages.success(request, "Instance requested.")
    return redirect("agents:agent-detail", agent_id=agent.pk)


@requires("agents:write")
@require_POST
def instance_stop(
    request: HttpRequest, actor: Actor, agent_id: Any, instance_id: Any
) -> HttpResponse:
    agent = _agent_or_404(actor, agent_id)
    try:
        services.instance_stop(actor=actor, agent_id=agent.pk, instance_id=instance_id)
    except AgentInstance.DoesNotExist as error:
        raise Http404("No such instance.") from error
    messages.success(request, "Instance stopped; its resources are back in the pool.")
    return redirect("agents:agent-detail", agent_id=agent.pk)


# --- The resource pool -----------------------------------------------------------------------


@requires("agents:read")
def pool_detail(request: HttpRequest, actor: Actor) -> HttpResponse:
    limits = selectors.limits_get()
    return render(
        request,
        "agents/pool.html",
        {
            "limits": limits,
            "max_instance_cpu": format_cpu(limits.max_instance_cpu_millicores),
            "max_instance_memory": format_memory(limits.max_instance_memory_mb),
            **_pool_context(actor, limits),
        },
    )


# --- Config ----------------------------------------------------------------------------------


def _config_page(
    request: HttpRequest, actor: Actor, form: ConfigForm, editing: ConfigKey | None, status: int
) -> HttpResponse:
    agent_type = request.GET.get("type", "worker").strip()
    try:
        agent_type = validate_agent_type(agent_type)
    except ValidationError:
        agent_type = "worker"
    resolution = selectors.config_resolve(actor=actor, agent_type=agent_type)
    entries = list(selectors.config_list(actor=actor))
    organization_types = [
        entry.key.split(".", 1)[1]
        for entry in entries
        if entry.key.startswith(f"{AGENTS_NAMESPACE}.") and entry.key != "agents.defaults"
    ]
    search = request.GET.get("q", "").strip()[:200]
    matching = [entry for entry in entries if search.lower() in entry.key] if search else entries
    page = Paginator(matching, CONFIG_PAGE_SIZE).get_page(request.GET.get("page"))
    versions = selectors.config_key_versions(actor=actor, keys=[e.key for e in page.object_list])
    return render(
        request,
        "agents/config.html",
        {
            "form": form,
            "editing": editing,
            "editing_version": versions.get(editing.key) if editing else None,
            "search": search,
            "page": page,
            "total_keys": len(entries),
            "query": urlencode({"q": search}) if search else "",
            "entries": [
                {
                    "entry": entry,
                    "pretty": pretty(entry.value),
                    "key_version": versions.get(entry.key),
                }
                for entry in page.object_list
            ],
            "can_write": actor.can("config:write"),
            "agent_type": agent_type,
            "types": sorted(set(_type_choices(actor)) | set(organization_types) | {agent_type}),
            "resolution": resolution,
            "resolved_json": pretty(resolution.value),
        },
        status=status,
    )


@requires("config:read")
@require_http_methods(["GET", "POST"])
def config_list(request: HttpRequest, actor: Actor) -> HttpResponse:
    """The keys, the editor (a new key, or `?key=` to edit one), and the resolved view."""
    if request.method == "POST":
        if not actor.can("config:write"):
            raise PermissionDenied
        form = ConfigForm(request.POST)
        if form.is_valid():
            try:
                entry = services.config_set(
                    actor=actor, key=form.cleaned_data["key"], value=form.cleaned_data["value"]
                )
            except ValidationError as error:
                apply_service_errors(form, error)
            else:
                messages.success(request, f"Saved {entry.key} (version {entry.key_version}).")
                return redirect(f"{reverse('agents:config-list')}?{urlencode({'key': entry.key})}")
        return _config_page(request, actor, form, None, status=400)
    editing = None
    key = request.GET.get("key", "")
    initial: dict[str, Any] = {"value": "{\n  \n}"}
    if key:
        try:
            editing = selectors.config_get(actor=actor, key=key)
        except ConfigKey.DoesNotExist:
            editing = None
        initial = {"key": key, "value": pretty(editing.value) if editing else initial["value"]}
    return _config_page(request, actor, ConfigForm(initial=initial), editing, status=200)


@requires("config:write")
@require_POST
def config_delete(request: HttpRequest, actor: Actor) -> HttpResponse:
    key = request.POST.get("key", "")
    try:
        services.config_delete(actor=actor, key=key)
    except (ConfigKey.DoesNotExist, ValidationError) as error:
        raise Http404("No such key.") from error
    messages.success(request, f"Deleted {key}.")
    return redirect("agents:config-list")


@requires("config:read")
def config_history(request: HttpRequest, actor: Actor) -> HttpResponse:
    """One key's versions, newest first, each with what changed against the one before."""
    key = request.GET.get("key", "")
    versions = selectors.config_history(actor=actor, key=key)
    if not versions:
        raise Http404("No such key.")
    rows = []
    for index, version in enumerate(versions):
        before = versions[index + 1] if index + 1 < len(versions) else None
        rows.append(
            {
                "version": version,
                "pretty": pretty(version.value) if version.value is not None else None,
                "diff": _diff(before, version),
                "is_current": index == 0 and version.value is not None,
            }
        )
    return render(
        request,
        "agents/config_history.html",
        {"key": key, "rows": rows, "can_write": actor.can("config:write")},
    )


def _diff(before: ConfigVersion | None, after: ConfigVersion) -> list[dict[str, str]]:
    """Lines of a unified diff of the pretty JSON, each with its kind (added, removed, ...)."""
    old = pretty(before.value).splitlines() if before and before.value is not None else []
    new = pretty(after.value).splitlines() if after.value is not None else []
    lines = []
    for line in difflib.unified_diff(old, new, lineterm="", n=2):
        if line.startswith(("---", "+++")):
            continue
        kind = {"+": "added", "-": "removed", "@": "hunk"}.get(line[:1], "same")
        lines.append({"kind": kind, "text": line})
    return lines


@requires("config:write")
@require_POST
def config_rollback(request: HttpRequest, actor: Actor) -> HttpResponse:
    key = request.POST.get("key", "")
    try:
        number = int(request.POST.get("number", ""))
        entry = services.config_rollback(actor=actor, key=key, number=number)
    except (ValueError, ConfigVersion.DoesNotExist, ValidationError) as error:
        raise Http404("No such version.") from error
    messages.success(
        request,
        f"{entry.key} is back to version {number}'s value, saved as version {entry.key_version}.",
    )
    return redirect(f"{reverse('agents:config-history')}?{urlencode({'key': entry.key})}")
