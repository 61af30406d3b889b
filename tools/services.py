"""Every write of custom tools, and every run: save (a new version each time the code, schema,
limits or permissions change), delete, run (API, portal, agents' runtimes), and the host API a
run is handed (config.read, kv.read, kv.write, kv.delete, publish, secret).

A run happens in a sandbox worker process (tools.pool), never here. The host API calls come back
to this process and are answered by `_host`, which takes the organization from the run (the
schema the run started in, checked again at every call) and the permissions from the tool
version's grant filtered by the current plan, never from the sandbox's arguments.

Secrets: a version granted `secrets:<NAME>` may read that secret with `api.secret("NAME")`.
Only someone who may set secrets (`secrets:write`: admins) saves a version that holds such a
grant, a change of code included (new code could hand the value to anyone who runs the tool).
Every value a run read is replaced by `[secret NAME]` in its output, logs and error before they
leave this module: an accident guard, not a boundary (code can encode a value it was granted).
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction

from agents import selectors as agent_selectors
from agents.models import Agent, ConfigKey
from audit import services as audit
from audit.models import Result
from core import tool_permissions
from core.actors import Actor
from core.agent_permissions import TOOL_RE, tool_entries
from core.errors import ConcurrencyLimited, Unavailable, field_error
from tenants import context
from tenants.events import SUBJECT_TOKEN
from tools import metering, pool, selectors
from tools.models import Tool, ToolValue, ToolVersion
from vault import services as vault

logger = logging.getLogger("agentplane.tools")

TOOL_FIELDS = (
    "name",
    "description",
    "input_schema",
    "code",
    "timeout_ms",
    "memory_mb",
    "permissions",
)
VERSIONED_FIELDS = ("input_schema", "code", "timeout_ms", "memory_mb", "permissions")
DEFAULT_TIMEOUT_MS = 5000
DEFAULT_MEMORY_MB = 32
MIN_MEMORY_MB = 8
MAX_DESCRIPTION_LENGTH = 2000
MAX_SCHEMA_DEPTH = 32
# Keywords whose regular expressions Python would run in the web process: refused on save
# (a catastrophic pattern there would be a denial of service outside the sandbox).
REFUSED_SCHEMA_KEYWORDS = frozenset({"pattern", "patternProperties", "$dynamicRef", "$ref"})
COMPILE_CHECK_TIMEOUT_MS = 2000
SLOT_HOLD_EXTRA_SECONDS = 60
RUN_STATUSES = ("ok", "timeout", "memory_limit", "error", "invalid_input")
KV_KEY_MAX = 200
PUBLISH_SUBJECT_MAX = 100
SECRETS_PERMISSION = "secrets:write"  # who may grant a tool secrets (admins)


@dataclass
class RunResult:
    status: str
    output: Any = None
    logs: list[str] = field(default_factory=list)
    duration_ms: float = 0.0
    memory_bytes: int = 0
    error: dict[str, Any] | None = None
    cpu_ms: float = 0.0
    tool: Tool | None = None
    version: int = 0

    def as_dict(self) -> dict[str, Any]:
        body = {
            "status": self.status,
            "output": self.output,
            "logs": self.logs,
            "duration_ms": self.duration_ms,
            "memory_bytes": self.memory_bytes,
            "version": self.version,
        }
        if self.error is not None:
            body["error"] = self.error
        return body


# --- Validation ------------------------------------------------------------------------------


def _schema_depth_and_keywords(schema: Any, depth: int = 0) -> None:
    if depth > MAX_SCHEMA_DEPTH:
        raise field_error("input_schema", "The schema is nested too deeply.", "too_deep")
    if isinstance(schema, dict):
        refused = sorted(REFUSED_SCHEMA_KEYWORDS & set(schema))
        if refused:
            raise field_error(
                "input_schema",
                f"Not supported in tool schemas: {', '.join(refused)}.",
                "unsupported_keyword",
            )
        for value in schema.values():
            _schema_depth_and_keywords(value, depth + 1)
    elif isinstance(schema, list):
        for value in schema:
            _schema_depth_and_keywords(value, depth + 1)


def _clean_schema(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise field_error("input_schema", "Give a JSON Schema (an object).", "invalid")
    if len(json.dumps(value)) > settings.TOOLS_MAX_SCHEMA_BYTES:
        raise field_error(
            "input_schema", f"At most {settings.TOOLS_MAX_SCHEMA_BYTES} bytes.", "too_large"
        )
    _schema_depth_and_keywords(value)
    try:
        jsonschema.Draft202012Validator.check_schema(value)
    except jsonschema.SchemaError as error:
        raise field_error(
            "input_schema", f"Not a valid JSON Schema: {error.message[:300]}", "invalid_schema"
        ) from error
    return value


def _clean_int(name: str, value: Any, low: int, high: int, unit: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise field_error(name, "Give a whole number.", "invalid")
    if not low <= value <= high:
        # Above the plan's maximum (the document gives the platform's): a conflict, 409.
        code = "plan_maximum" if value > high else "out_of_range"
        raise field_error(name, f"Between {low} and {high} {unit} (your plan's maximum).", code)
    return value


def _clean(data: dict[str, Any], limits: selectors.ToolLimits, *, partial: bool) -> dict[str, Any]:
    """Validate the given fields (all required ones unless `partial`); every field's errors."""
    unknown = sorted(set(data) - set(TOOL_FIELDS))
    if unknown:
        raise ValidationError({name: ["Unknown field."] for name in unknown})
    errors: dict[str, list[ValidationError]] = {}
    cleaned: dict[str, Any] = {}

    def clean_name(value: Any) -> str:
        if not isinstance(value, str) or not TOOL_RE.fullmatch(value):
            raise field_error(
                "name",
                "Lowercase letters, digits, _, . and -, starting with a letter, at most 64.",
                "invalid",
            )
        return value

    def clean_description(value: Any) -> str:
        if value is None:
            return ""
        if not isinstance(value, str) or len(value) > MAX_DESCRIPTION_LENGTH:
            raise field_error(
                "description", f"At most {MAX_DESCRIPTION_LENGTH} characters.", "max_length"
            )
        return value.strip()

    def clean_code(value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise field_error(
                "code", "Write the tool's code: function run(input, api).", "required"
            )
        if len(value.encode("utf-8", "surrogatepass")) > settings.TOOLS_MAX_CODE_BYTES:
            raise field_error(
                "code", f"At most {settings.TOOLS_MAX_CODE_BYTES} bytes.", "too_large"
            )
        return value

    checks = {
        "name": clean_name,
        "description": clean_description,
        "input_schema": _clean_schema,
        "code": clean_code,
        "timeout_ms": lambda v: _clean_int("timeout_ms", v, 1, limits.max_timeout_ms, "ms"),
        "memory_mb": lambda v: _clean_int(
            "memory_mb", v, MIN_MEMORY_MB, max(limits.max_memory_mb, MIN_MEMORY_MB), "MiB"
        ),
        "permissions": lambda v: _clean_permissions(v, limits),
    }
    for name, check in checks.items():
        if name not in data:
            if not partial and name in {"name", "code"}:
                errors[name] = [ValidationError("This field is required.", code="required")]
            continue
        try:
            cleaned[name] = check(data[name])
        except ValidationError as error:
            for key, messages in error.error_dict.items():
                errors.setdefault(key, []).extend(messages)
    if errors:
        raise ValidationError(errors)
    if "code" in cleaned:
        syntax = compile_check(cleaned["code"])
        if syntax:
            raise field_error("code", syntax, "syntax_error")
    return cleaned


def _clean_permissions(value: Any, limits: selectors.ToolLimits) -> list[str]:
    permissions = tool_permissions.validate_permissions(value, allowed=limits.allowed_permissions)
    unknown = vault.unknown_secrets(tool_permissions.secret_names(permissions))
    if unknown:
        raise field_error("permissions", f"No such secret: {', '.join(unknown)}.", "unknown_secret")
    return permissions


def compile_check(code: str) -> str:
    """The syntax error in `code` ('' if none), from V8 in a sandbox worker: the code is parsed
    as the body of a function that is never called, so nothing in it runs."""
    job = pool.Job(
        code=f"(function(){{{code}\n}});",
        input=None,
        timeout_ms=COMPILE_CHECK_TIMEOUT_MS,
        memory_bytes=32 << 20,
        functions=[],
        max_output=1024,
        max_logs=0,
        max_call_bytes=0,
        max_calls=0,
        check_only=True,
    )
    try:
        result = pool.execute(job, _no_host, acquire_timeout=settings.TOOLS_WORKER_WAIT_SECONDS)
    except pool.WorkerUnavailable as error:
        raise Unavailable(
            "sandbox_busy", "The code cannot be checked right now: try again.", retry_after=2
        ) from error
    if result["status"] == "ok":
        return ""
    if result["status"] == "timeout":
        return "The code could not be checked in time."
    return _syntax_message(str((result.get("error") or {}).get("message", "")), code)


def _syntax_message(message: str, code: str) -> str:
    """V8's `<anonymous>:6: SyntaxError: ...` as `Line 6: SyntaxError: ...` (a line past the
    code's last is the check's own closing line: the code ended too early)."""
    match = re.match(r"^<anonymous>:(\d+): (.*)$", message.splitlines()[0] if message else "")
    if match is None:
        return message[:500] or "Syntax error."
    line, text = int(match.group(1)), match.group(2)[:300]
    if line > code.count("\n") + 1:
        return f"At the end of the code: {text} (a bracket or brace is not closed?)"
    return f"Line {line}: {text}"


def _no_host(function: str, args: Any) -> Any:
    raise pool.HostError("permission_denied", "No host API here.")


# --- Tools -----------------------------------------------------------------------------------


def _tool_for_update(tool_id: Any) -> Tool:
    pk = selectors.as_uuid(tool_id)
    if pk is None:
        raise Tool.DoesNotExist
    return Tool.objects.select_for_update().get(pk=pk)


def _snapshot(tool: Tool) -> dict[str, Any]:
    return {"name": tool.name, "version": tool.version}


class _SecretGrantRefused(Exception):
    """Raised inside a save's transaction so that it rolls back before the refusal is recorded."""


def _refuse_secret_grant(actor: Actor, action: str, tool_id: Any = "") -> None:
    audit.deny(
        actor=actor,
        action=action,
        resource_type="tool",
        resource_id=str(tool_id),
        reason=f"Granting a tool secrets needs the “{SECRETS_PERMISSION}” permission.",
    )


def tool_create(*, actor: Actor, **data: Any) -> Tool:
    audit.require(actor, "tools:write", action="tool.created", resource_type="tool")
    limits = selectors.limits_get()
    cleaned = _clean(data, limits, partial=False)
    if tool_permissions.secret_names(cleaned.get("permissions", [])) and not actor.can(
        SECRETS_PERMISSION
    ):
        _refuse_secret_grant(actor, "tool.created")
    try:
        with transaction.atomic():
            tool = Tool.objects.create(
                name=cleaned["name"],
                description=cleaned.get("description", ""),
                created_by=actor.label,
            )
            version = ToolVersion.objects.create(
                tool=tool,
                number=1,
                code=cleaned["code"],
                input_schema=cleaned.get("input_schema", {}),
                timeout_ms=cleaned.get(
                    "timeout_ms", min(DEFAULT_TIMEOUT_MS, limits.max_timeout_ms)
                ),
                memory_mb=cleaned.get(
                    "memory_mb", max(MIN_MEMORY_MB, min(DEFAULT_MEMORY_MB, limits.max_memory_mb))
                ),
                permissions=cleaned.get("permissions", []),
                created_by=actor.label,
            )
            audit.emit(
                actor=actor,
                action="tool.created",
                subject="tools.changed",
                resource_type="tool",
                resource_id=str(tool.pk),
                details={**_snapshot(tool), "permissions": version.permissions},
            )
    except IntegrityError as error:
        raise field_error("name", "A tool with this name exists.", "unique") from error
    return tool


def tool_update(*, actor: Actor, tool_id: Any, **data: Any) -> Tool:
    """Change a tool; a change to its code, schema, limits or permissions saves a new version."""
    audit.require(
        actor, "tools:write", action="tool.updated", resource_type="tool", resource_id=str(tool_id)
    )
    selectors.tool_get(actor=actor, tool_id=tool_id)  # 404 before 400
    limits = selectors.limits_get()
    cleaned = _clean(data, limits, partial=True)
    try:
        with transaction.atomic():
            tool = _tool_for_update(tool_id)
            current = selectors.version_get(tool=tool)
            changed = {
                name: cleaned[name]
                for name in VERSIONED_FIELDS
                if name in cleaned and cleaned[name] != getattr(current, name)
            }
            # A new version that holds a secret grant (kept or added) is an admin's to save.
            resulting = changed.get("permissions", current.permissions)
            if (
                changed
                and tool_permissions.secret_names(resulting)
                and not actor.can(SECRETS_PERMISSION)
            ):
                raise _SecretGrantRefused
            for name in ("name", "description"):
                if name in cleaned:
                    setattr(tool, name, cleaned[name])
            if changed:
                tool.version = current.number + 1
                ToolVersion.objects.create(
                    tool=tool,
                    number=tool.version,
                    code=changed.get("code", current.code),
                    input_schema=changed.get("input_schema", current.input_schema),
                    timeout_ms=changed.get("timeout_ms", current.timeout_ms),
                    memory_mb=changed.get("memory_mb", current.memory_mb),
                    permissions=changed.get("permissions", current.permissions),
                    created_by=actor.label,
                )
            tool.save()
            audit.emit(
                actor=actor,
                action="tool.updated",
                subject="tools.changed",
                resource_type="tool",
                resource_id=str(tool.pk),
                details={**_snapshot(tool), "changed": sorted(set(cleaned))},
            )
    except IntegrityError as error:
        raise field_error("name", "A tool with this name exists.", "unique") from error
    except _SecretGrantRefused:
        _refuse_secret_grant(actor, "tool.updated", tool_id)
    return tool


def tool_delete(*, actor: Actor, tool_id: Any) -> None:
    audit.require(
        actor, "tools:write", action="tool.deleted", resource_type="tool", resource_id=str(tool_id)
    )
    selectors.tool_get(actor=actor, tool_id=tool_id)
    with transaction.atomic():
        tool = _tool_for_update(tool_id)
        snapshot = _snapshot(tool)
        pk = str(tool.pk)
        tool.delete()
        audit.emit(
            actor=actor,
            action="tool.deleted",
            subject="tools.changed",
            resource_type="tool",
            resource_id=pk,
            details=snapshot,
        )


# --- Runs ------------------------------------------------------------------------------------


@contextmanager
def _organization_slot(tenant: Any, limit: int, hold_seconds: float) -> Iterator[None]:
    """One of the organization's `limit` run slots (Redis keys with an expiry, so a crashed
    process cannot leak one for long); waits briefly, then 429 `concurrency_limit`.

    Fails closed: without the counters, no run (a 503), since the slots are what keep one
    organization's flood from taking every worker."""
    token = uuid.uuid4().hex
    keys = [f"tools:running:{tenant.public_id}:{n}" for n in range(limit)]
    deadline = time.monotonic() + settings.TOOLS_CONCURRENCY_WAIT_SECONDS
    taken = None
    pause = 0.01
    try:
        while taken is None:
            for key in keys:
                if cache.add(key, token, timeout=int(hold_seconds) + 1):
                    taken = key
                    break
            else:
                if time.monotonic() >= deadline:
                    raise ConcurrencyLimited(limit=limit)
                # Back off (with jitter) so that many waiters do not hammer Redis in step.
                time.sleep(pause * random.uniform(0.5, 1.5))  # noqa: S311
                pause = min(pause * 2, 0.2)
    except ConcurrencyLimited:
        raise
    except Exception as error:
        logger.error("tool concurrency slots unavailable", exc_info=True)
        raise Unavailable(
            "concurrency_limiter_unavailable",
            "Tools cannot run right now: try again.",
            retry_after=5,
        ) from error
    try:
        yield
    finally:
        try:
            if cache.get(taken) == token:
                cache.delete(taken)
        except Exception:
            logger.warning("could not free a tool run slot (it expires)", exc_info=True)


def _input_problem(version: ToolVersion, value: Any) -> str:
    try:
        size = len(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        return "The input is not JSON."
    if size > settings.TOOLS_MAX_INPUT_BYTES:
        return f"The input is larger than {settings.TOOLS_MAX_INPUT_BYTES} bytes."
    validator = jsonschema.Draft202012Validator(version.input_schema or {})
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(the input)"
        return f"{where}: {error.message[:300]}"
    return ""


@dataclass
class _Run:
    tenant: Any
    tool: Tool
    version: ToolVersion
    functions: frozenset[str]
    actor: Actor  # who the host API's writes are recorded as
    caller: Actor  # who started the run
    secrets: frozenset[str] = frozenset()  # the secret names granted
    revealed: dict[str, str] = field(default_factory=dict)  # value -> name, read by this run


def tool_run(
    *,
    actor: Actor,
    tool_id: Any,
    input: Any,  # noqa: A002 (the API's name for it)
    version: int | None = None,
    agent: Agent | None = None,
) -> RunResult:
    """Run a version of a tool (default: its current one) on `input`; every run is metered and
    audited. Tool.DoesNotExist / ToolVersion.DoesNotExist for a tool or version not here."""
    audit.require(
        actor, "tools:run", action="tool.run", resource_type="tool", resource_id=str(tool_id)
    )
    tenant = context.require_tenant()
    plan_limits = selectors.limits_cached(tenant)
    hold = plan_limits.max_timeout_ms / 1000 + pool.KILL_GRACE_MS / 1000 + SLOT_HOLD_EXTRA_SECONDS
    with _organization_slot(tenant, plan_limits.concurrency, hold):
        pk = selectors.as_uuid(tool_id)
        if pk is None:
            raise Tool.DoesNotExist
        tool = Tool.objects.get(pk=pk)
        chosen = selectors.version_get(tool=tool, number=version)
        limits = selectors.limits_get()
        # A hard quota on runs (or CPU time) refuses before the run: 429 `quota_exceeded`.
        admitted = metering.admit_tool_run(tenant=tenant, tool=tool.name)
        problem = _input_problem(chosen, input)
        if problem:
            result = RunResult(status="invalid_input", error={"message": problem, "stack": ""})
        else:
            permissions = selectors.granted_permissions(chosen, limits)
            run = _Run(
                tenant=tenant,
                tool=tool,
                version=chosen,
                functions=frozenset(tool_permissions.functions_for(permissions)),
                actor=Actor(
                    kind="system",
                    id=f"tool:{tool.pk}",
                    label=f"tool {tool.name} v{chosen.number} (run by {actor.label})"[:200],
                ),
                caller=actor,
                secrets=frozenset(tool_permissions.secret_names(permissions)),
            )
            try:
                result = _redact(_execute(run, chosen, input, limits), run.revealed)
            except BaseException:
                metering.release_tool_run(tenant=tenant, tool=tool.name, admitted=admitted)
                raise
    result.tool, result.version = tool, chosen.number
    metering.record_tool_run(tenant=tenant, tool=tool.name, cpu_ms=result.cpu_ms, admitted=admitted)
    details = {
        "tool": tool.name,
        "version": chosen.number,
        "status": result.status,
        "duration_ms": result.duration_ms,
        "cpu_ms": result.cpu_ms,
        "memory_bytes": result.memory_bytes,
    }
    if agent is not None:
        details["agent"] = str(agent.pk)
    audit.record(
        actor=actor,
        action="tool.run",
        resource_type="tool",
        resource_id=str(tool.pk),
        result=Result.SUCCESS if result.status == "ok" else Result.FAILED,
        details=details,
    )
    return result


def _execute(
    run: _Run, version: ToolVersion, value: Any, limits: selectors.ToolLimits
) -> RunResult:
    # A version saved before a downgrade runs within the current plan's limits.
    timeout_ms = min(version.timeout_ms, limits.max_timeout_ms)
    memory_mb = max(MIN_MEMORY_MB, min(version.memory_mb, limits.max_memory_mb))
    job = pool.Job(
        code=version.code,
        input=value,
        timeout_ms=timeout_ms,
        memory_bytes=memory_mb * 1024 * 1024,
        functions=sorted(run.functions),
        max_output=settings.TOOLS_MAX_OUTPUT_CHARS,
        max_logs=settings.TOOLS_MAX_LOG_CHARS,
        max_call_bytes=settings.TOOLS_MAX_CALL_BYTES,
        max_calls=settings.TOOLS_MAX_CALLS,
    )
    try:
        done = pool.execute(
            job,
            lambda fn, args: _host(run, fn, args),
            acquire_timeout=settings.TOOLS_WORKER_WAIT_SECONDS,
        )
    except pool.WorkerUnavailable as error:
        raise Unavailable(
            "sandbox_busy", "Every sandbox worker is busy: try again shortly.", retry_after=2
        ) from error
    return RunResult(
        status=done["status"] if done["status"] in RUN_STATUSES else "error",
        output=done.get("output"),
        logs=[str(line) for line in done.get("logs") or []],
        duration_ms=float(done.get("duration_ms") or 0),
        memory_bytes=int(done.get("memory_bytes") or 0),
        error=done.get("error"),
        cpu_ms=float(done.get("cpu_ms") or 0),
    )


def agent_tool_run(*, actor: Actor, agent_id: Any, name: str, input: Any) -> RunResult:  # noqa: A002
    """An agent's runtime runs a tool by name: the agent must list it (`name` or `name@<n>`,
    which pins version n) and hold the `tools:invoke` permission its plan allows."""
    audit.require(
        actor, "tools:run", action="tool.run", resource_type="tool", resource_id=name[:64]
    )
    agent = agent_selectors.agent_get(actor=Actor.system("tools"), agent_id=agent_id)
    granted = agent_selectors.granted_permissions(agent=agent, limits=agent_selectors.limits_get())
    if "tools:invoke" not in granted:
        audit.deny(
            actor=actor,
            action="tool.run",
            resource_type="agent",
            resource_id=str(agent.pk),
            reason="The agent does not hold the “tools:invoke” permission.",
        )
    entries = tool_entries(agent.tools)
    if name not in entries:
        raise Tool.DoesNotExist  # not one of this agent's tools: as if it did not exist
    tool = Tool.objects.get(name=name)
    return tool_run(actor=actor, tool_id=tool.pk, input=input, version=entries[name], agent=agent)


# --- The host API ------------------------------------------------------------------------------


def _host(run: _Run, function: str, args: Any) -> Any:
    """Answer one host API call of `run`: the organization is the run's (checked again: the
    thread must still be in its schema), the permission the tool version's current grant."""
    current = context.current_tenant()
    if current is None or current.pk != run.tenant.pk:
        raise pool.HostError("forbidden", "This call is outside the run's organization.")
    if function not in HOST_FUNCTIONS:
        raise pool.HostError("unknown_function", f"No host function {function[:40]!r}.")
    if function not in run.functions:
        raise pool.HostError(
            "permission_denied", f"This tool was not granted the permission for {function}."
        )
    handler, arity = HOST_FUNCTIONS[function]
    if not isinstance(args, list) or not arity[0] <= len(args) <= arity[1]:
        raise pool.HostError("invalid", f"{function} takes {arity[0]} to {arity[1]} arguments.")
    return handler(run, *args)


def _kv_key(key: Any) -> str:
    if not isinstance(key, str) or not 0 < len(key) <= KV_KEY_MAX or not key.isprintable():
        raise pool.HostError(
            "invalid", f"A key is a printable string of 1 to {KV_KEY_MAX} characters."
        )
    return key


def _config_read(run: _Run, key: Any) -> Any:
    if not isinstance(key, str):
        raise pool.HostError("invalid", "A config key is a string.")
    try:
        return agent_selectors.config_get(actor=Actor.system("tools"), key=key).value
    except ConfigKey.DoesNotExist:
        return None


def _kv_read(run: _Run, key: Any) -> Any:
    row = ToolValue.objects.filter(key=_kv_key(key)).values_list("value", flat=True).first()
    return row


def _kv_write(run: _Run, key: Any, value: Any = None) -> bool:
    kv_set(actor=run.actor, key=_kv_key(key), value=value)
    return True


def _kv_delete(run: _Run, key: Any) -> bool:
    return kv_delete(actor=run.actor, key=_kv_key(key))


def _secret(run: _Run, name: Any) -> str:
    """`api.secret(name)`: the value, if this version is granted `secrets:<name>` (read through
    the vault as the run's organization, and recorded there)."""
    if not isinstance(name, str) or name not in run.secrets:
        shown = name[:64] if isinstance(name, str) else ""
        audit.record(
            actor=run.caller,
            action="secret.read_by_tool",
            resource_type="secret",
            result=Result.DENIED,
            details={"name": shown, "tool": run.tool.name, "version": run.version.number},
        )
        raise pool.HostError(
            "permission_denied", f"This tool was not granted the secret {shown!r}."
        )
    value = vault.secret_tool_read(
        actor=run.caller, name=name, tool=run.tool.name, version=run.version.number
    )
    if value is None:
        raise pool.HostError("not_found", f"The organization has no secret {name!r}.")
    run.revealed[value] = name
    return value


def _redact(result: RunResult, revealed: dict[str, str]) -> RunResult:
    """The run's output, logs and error with every secret value it read replaced by its name."""
    if not revealed:
        return result
    # Longest first, so that a value containing another is replaced whole.
    pairs = sorted(revealed.items(), key=lambda pair: -len(pair[0]))

    def text(value: str) -> str:
        for secret, name in pairs:
            value = value.replace(secret, f"[secret {name}]")
        return value

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return text(value)
        if isinstance(value, list):
            return [walk(item) for item in value]
        if isinstance(value, dict):
            return {text(key): walk(item) for key, item in value.items()}
        return value

    result.output = walk(result.output)
    result.logs = [text(line) for line in result.logs]
    if result.error is not None:
        result.error = walk(result.error)
    return result


def _publish(run: _Run, subject: Any, data: Any = None) -> bool:
    if (
        not isinstance(subject, str)
        or not 0 < len(subject) <= PUBLISH_SUBJECT_MAX
        or not all(SUBJECT_TOKEN.match(token) for token in subject.split("."))
    ):
        raise pool.HostError(
            "invalid", "A subject is dot-separated tokens of letters, digits, _ and - (tools.*)."
        )
    if len(json.dumps(data)) > settings.GATEWAY_MAX_MESSAGE_BYTES:
        raise pool.HostError("too_large", "A message has at most 64 KB.")
    audit.emit(
        actor=run.actor,
        action=None,
        subject=f"tools.{subject}",
        data={"tool": run.tool.name, "version": run.version.number, "data": data},
        verbatim=True,
    )
    return True


HOST_FUNCTIONS = {
    "config.read": (_config_read, (1, 1)),
    "kv.read": (_kv_read, (1, 1)),
    "kv.write": (_kv_write, (2, 2)),
    "kv.delete": (_kv_delete, (1, 1)),
    "publish": (_publish, (1, 2)),
    tool_permissions.SECRET_FUNCTION: (_secret, (1, 1)),
}


def kv_set(*, actor: Actor, key: str, value: Any) -> ToolValue:
    """Write one key of the organization's tool store (a tool's `kv.write`)."""
    if len(json.dumps(value)) > settings.TOOLS_KV_MAX_VALUE_BYTES:
        raise pool.HostError(
            "too_large", f"A value has at most {settings.TOOLS_KV_MAX_VALUE_BYTES} bytes."
        )
    with transaction.atomic():
        # One writer at a time per organization, so the key count cannot be raced past its cap.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))",
                [f"tools.kv.{context.require_tenant().public_id}"],
            )
        exists = ToolValue.objects.filter(key=key).exists()
        if not exists and ToolValue.objects.count() >= settings.TOOLS_KV_MAX_KEYS:
            raise pool.HostError(
                "quota_exceeded", f"The store holds at most {settings.TOOLS_KV_MAX_KEYS} keys."
            )
        row, _ = ToolValue.objects.update_or_create(
            key=key, defaults={"value": value, "updated_by": actor.label}
        )
        audit.emit(
            actor=actor,
            action="tool.kv_written",
            subject="tools.kv.changed",
            resource_type="tool_value",
            resource_id=key[:128],
            details={"key": key[:200]},
        )
    return row


def kv_delete(*, actor: Actor, key: str) -> bool:
    with transaction.atomic():
        deleted, _ = ToolValue.objects.filter(key=key).delete()
        if deleted:
            audit.emit(
                actor=actor,
                action="tool.kv_deleted",
                subject="tools.kv.changed",
                resource_type="tool_value",
                resource_id=key[:128],
                details={"key": key[:200]},
            )
    return bool(deleted)
