"""Portal pages of custom tools: the list, the editor (syntax errors shown on save), versions,
and Test run (a real run in the sandbox, audited and metered like any other)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from core import tool_permissions
from core.actors import Actor
from core.errors import DomainError
from core.pages import requires
from tools import selectors, services
from tools.forms import RunForm, ToolForm
from tools.models import Tool, ToolVersion
from vault import selectors as vault_selectors


def _tool_or_404(actor: Actor, tool_id: Any) -> Tool:
    try:
        return selectors.tool_get(actor=actor, tool_id=tool_id)
    except Tool.DoesNotExist as error:
        raise Http404("No such tool.") from error


def _form(
    actor: Actor, version: ToolVersion | None, data: Any = None, tool: Tool | None = None
) -> ToolForm:
    """The editor's form, offering the organization's secrets (by name) and those granted."""
    secrets = tool_permissions.secret_names(version.permissions) if version else []
    if actor.can("secrets:read"):
        secrets += vault_selectors.secret_names(actor=actor)
    if data is not None:
        return ToolForm(data, secrets=secrets)
    return ToolForm(initial=ToolForm.initial_for(tool, version), secrets=secrets)


def _apply_errors(form: ToolForm, error: ValidationError) -> None:
    for field, errors in error.error_dict.items():
        form.add_error(field if field in form.fields else None, errors)


@requires("tools:read")
def tool_list(request: HttpRequest, actor: Actor) -> HttpResponse:
    tools = list(selectors.tool_list(actor=actor))
    versions = selectors.current_versions(tools)
    rows = [{"tool": tool, "version": versions.get(tool.pk)} for tool in tools]
    return render(
        request,
        "tools/tool_list.html",
        {"rows": rows, "can_write": actor.can("tools:write"), "limits": selectors.limits_get()},
    )


def _editor(
    request: HttpRequest,
    actor: Actor,
    form: ToolForm,
    tool: Tool | None,
    *,
    run_form: RunForm | None = None,
    result: services.RunResult | None = None,
    status: int = 200,
) -> HttpResponse:
    versions = list(selectors.version_list(actor=actor, tool=tool)[:20]) if tool else []
    return render(
        request,
        "tools/tool_editor.html",
        {
            "form": form,
            "tool": tool,
            "versions": versions,
            "run_form": run_form or RunForm(initial={"input": '{\n  "name": "Ada"\n}'}),
            "result": result,
            "result_output": json.dumps(result.output, indent=2) if result else "",
            "can_write": actor.can("tools:write"),
            "can_run": actor.can("tools:run"),
            "limits": selectors.limits_get(),
        },
        status=status,
    )


@requires("tools:write")
@require_http_methods(["GET", "POST"])
def tool_create(request: HttpRequest, actor: Actor) -> HttpResponse:
    if request.method == "GET":
        return _editor(request, actor, _form(actor, None), None)
    form = _form(actor, None, request.POST)
    if form.is_valid():
        try:
            tool = services.tool_create(actor=actor, **form.service_data())
        except ValidationError as error:
            _apply_errors(form, error)
        except DomainError as error:
            form.add_error(None, error.message)
        else:
            messages.success(request, f"Tool “{tool.name}” saved as version 1.")
            return redirect("tools:tool-detail", tool_id=tool.pk)
    return _editor(request, actor, form, None, status=400)


@requires("tools:read")
@require_http_methods(["GET", "POST"])
def tool_detail(request: HttpRequest, actor: Actor, tool_id: Any) -> HttpResponse:
    tool = _tool_or_404(actor, tool_id)
    version = selectors.version_get(tool=tool)
    if request.method == "GET":
        return _editor(request, actor, _form(actor, version, tool=tool), tool)
    form = _form(actor, version, request.POST)
    if form.is_valid():
        try:
            saved = services.tool_update(actor=actor, tool_id=tool.pk, **form.service_data())
        except (Tool.DoesNotExist, ToolVersion.DoesNotExist) as error:
            raise Http404 from error
        except ValidationError as error:
            _apply_errors(form, error)
        except DomainError as error:
            form.add_error(None, error.message)
        else:
            if saved.version != tool.version:
                messages.success(request, f"Saved as version {saved.version}.")
            else:
                messages.info(request, "Saved; code, schema, limits and permissions unchanged.")
            return redirect("tools:tool-detail", tool_id=tool.pk)
    return _editor(request, actor, form, tool, status=400)


@requires("tools:run")
@require_POST
def tool_run(request: HttpRequest, actor: Actor, tool_id: Any) -> HttpResponse:
    tool = _tool_or_404(actor, tool_id)
    form = _form(actor, selectors.version_get(tool=tool), tool=tool)
    run_form = RunForm(request.POST)
    if not run_form.is_valid():
        return _editor(request, actor, form, tool, run_form=run_form, status=400)
    try:
        result = services.tool_run(
            actor=actor, tool_id=tool.pk, input=run_form.cleaned_data["input"]
        )
    except Tool.DoesNotExist as error:
        raise Http404 from error
    except DomainError as error:
        run_form.add_error(None, error.message)
        return _editor(request, actor, form, tool, run_form=run_form, status=error.status)
    return _editor(request, actor, form, tool, run_form=run_form, result=result)


@requires("tools:write")
@require_POST
def tool_delete(request: HttpRequest, actor: Actor, tool_id: Any) -> HttpResponse:
    tool = _tool_or_404(actor, tool_id)
    services.tool_delete(actor=actor, tool_id=tool.pk)
    messages.success(request, f"Tool “{tool.name}” deleted.")
    return redirect("tools:tool-list")
