"""Every write of the vault: secrets, their delivery to attached agents, knowledge documents, and
the rotation of the organization's data key (with the background re-encryption it starts)."""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from audit import services as audit
from audit.models import Result
from core.actors import Actor
from core.errors import DomainError, field_error
from core.roles import DATA_KEYS_ROTATE
from tenants import context
from vault import crypto, keys, keystore
from vault.fields import ENCRYPTED_MODELS, reencrypt
from vault.models import (
    SECRET_NAME_PATTERN,
    SINGLETON_PK,
    Classification,
    KeyState,
    KnowledgeDocument,
    Secret,
)

logger = logging.getLogger(__name__)

SECRET_NAME = re.compile(SECRET_NAME_PATTERN)
SECRET_VALUE_MAX_LENGTH = 8192
# The masked view shows the last four characters only of values long enough to keep them secret.
HINT_MIN_LENGTH = 12
MAX_SECRETS_PER_AGENT = 50
TITLE_MAX_LENGTH = 200
TEXT_MAX_LENGTH = 200_000
MAX_TAGS = 20
TAG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,39}$")
ROTATION_BATCH = 200
# A rotation whose worker has not reported for this long is stalled: it may be resumed.
ROTATION_STALE_SECONDS = 30
ROTATION_LOCK_CLASS = 0x524F5441  # "ROTA": one re-encryption worker per organization


class Conflict(DomainError):
    status = 409


# --- Secrets -------------------------------------------------------------------------------------


def validate_secret_name(name: Any) -> str:
    if not isinstance(name, str) or not SECRET_NAME.match(name):
        raise field_error(
            "name",
            "Use 1-64 characters: capital letters, digits and underscores, starting with a letter.",
            "invalid_name",
        )
    return name


def _clean_value(value: Any) -> str:
    if not isinstance(value, str) or value == "":
        raise field_error("value", "Enter the secret's value.", "required")
    if len(value) > SECRET_VALUE_MAX_LENGTH:
        raise field_error("value", f"At most {SECRET_VALUE_MAX_LENGTH} characters.", "max_length")
    if "\x00" in value:
        raise field_error("value", "The value cannot contain NUL characters.", "invalid")
    return value


def _hint(value: str) -> str:
    return value[-4:] if len(value) >= HINT_MIN_LENGTH else ""


def secret_set(*, actor: Actor, name: str, value: str) -> tuple[Secret, bool]:
    """Create the secret `name`, or replace its value; returns (secret, created). The value is
    encrypted; the audit log records the name and who set it, never the value."""
    audit.require(actor, "secrets:write", action="secret.set", resource_type="secret")
    errors: dict[str, list] = {}
    for clean, raw in ((validate_secret_name, name), (_clean_value, value)):
        try:
            clean(raw)
        except ValidationError as error:
            errors.update(error.error_dict)
    if errors:
        raise ValidationError(errors)
    try:
        with transaction.atomic():
            secret = Secret.objects.select_for_update().filter(name=name).first()
            created = secret is None
            if created:
                secret = Secret(name=name)
            secret.value = value
            secret.hint = _hint(value)
            secret.updated_by = actor.label
            secret.save()
            audit.emit(
                actor=actor,
                action="secret.created" if created else "secret.replaced",
                resource_type="secret",
                resource_id=secret.pk,
                details={"name": name},
            )
    except IntegrityError as error:  # a concurrent create of the same name won
        raise field_error("name", "A secret with this name was just created.", "taken") from error
    return secret, created


def secret_delete(*, actor: Actor, secret_id: Any) -> Secret:
    audit.require(
        actor, "secrets:write", action="secret.deleted", resource_type="secret", resource_id=""
    )
    with transaction.atomic():
        secret = Secret.objects.select_for_update().filter(pk=_uuid(secret_id)).first()
        if secret is None:
            raise Secret.DoesNotExist
        pk, name = secret.pk, secret.name
        secret.delete()
        audit.emit(
            actor=actor,
            action="secret.deleted",
            resource_type="secret",
            resource_id=pk,
            details={"name": name},
        )
    return secret


def secrets_deliver(
    *, actor: Actor, names: list[str], agent_id: str, instance_id: str
) -> dict[str, Any]:
    """The values of `names` (an agent's references) for the runtime attaching to its instance.

    Needs `secrets:use`, which a runtime's API key carries and people do not (so a member who can
    define agents cannot read values through one). Every delivery is recorded: the names, the
    agent and the instance; never a value. Names that no longer exist are reported as missing.
    """
    if not names:
        return {"values": {}, "missing": []}
    audit.require(
        actor,
        "secrets:use",
        action="secret.delivered",
        resource_type="instance",
        resource_id=instance_id,
    )
    with transaction.atomic():
        found = {secret.name: secret for secret in Secret.objects.filter(name__in=names)}
        values = {name: found[name].value for name in names if name in found}
        missing = [name for name in names if name not in found]
        audit.record(
            actor=actor,
            action="secret.delivered",
            resource_type="instance",
            resource_id=instance_id,
            details={"agent": agent_id, "names": sorted(values), "missing": missing},
        )
    return {"values": values, "missing": missing}


def validate_secret_references(value: Any) -> list[str]:
    """An agent definition's `secrets`: a list of existing secret names (without duplicates)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise field_error("secrets", "Give a list of secret names.", "invalid")
    if len(value) > MAX_SECRETS_PER_AGENT:
        raise field_error(
            "secrets", f"At most {MAX_SECRETS_PER_AGENT} secrets per agent.", "max_length"
        )
    names: list[str] = []
    for item in value:
        if not isinstance(item, str) or not SECRET_NAME.match(item):
            raise field_error("secrets", "Secret names are capitals, digits and _.", "invalid")
        if item not in names:
            names.append(item)
    unknown = unknown_secrets(names)
    if unknown:
        raise field_error("secrets", f"No such secret: {', '.join(unknown)}.", "unknown_secret")
    return names


def unknown_secrets(names: list[str]) -> list[str]:
    """The names among `names` that are not secrets of the current organization."""
    existing = set(Secret.objects.filter(name__in=names).values_list("name", flat=True))
    return [name for name in names if name not in existing]


def secret_tool_read(*, actor: Actor, name: str, tool: str, version: int) -> str | None:
    """The value of the secret `name` for a custom tool's run, in the run's organization (the
    current schema); None if there is no such secret.

    Only tools.services calls this, after checking that the run's tool version is granted
    `secrets:<name>` by an admin (`secrets:write` when saving) and that the thread is still in the
    run's organization: `actor` is who started the run, and needs no secrets permission of their
    own. Every read is recorded (who ran, the tool and version, the name; never the value).
    """
    with transaction.atomic():
        secret = Secret.objects.filter(name=name).first()
        audit.record(
            actor=actor,
            action="secret.read_by_tool",
            resource_type="secret",
            resource_id=secret.pk if secret else "",
            result=Result.SUCCESS if secret else Result.FAILED,
            details={"name": name, "tool": tool, "version": version},
        )
    return secret.value if secret else None


# --- Knowledge -----------------------------------------------------------------------------------


def _clean_document(data: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    unknown = sorted(
        str(name) for name in data if name not in {"title", "text", "tags", "classification"}
    )
    if unknown:
        raise ValidationError({name: ["Unknown field."] for name in unknown})
    errors: dict[str, list] = {}
    cleaned: dict[str, Any] = {}
    if "title" in data or not partial:
        title = data.get("title")
        if not isinstance(title, str) or not title.strip():
            errors["title"] = ["Enter a title."]
        elif len(title.strip()) > TITLE_MAX_LENGTH:
            errors["title"] = [f"At most {TITLE_MAX_LENGTH} characters."]
        elif any(ord(ch) < 32 for ch in title):
            errors["title"] = ["No control characters."]
        else:
            cleaned["title"] = title.strip()
    if "text" in data or not partial:
        text = data.get("text")
        if not isinstance(text, str):
            errors["text"] = ["Enter the text."]
        elif len(text) > TEXT_MAX_LENGTH:
            errors["text"] = [f"At most {TEXT_MAX_LENGTH} characters."]
        elif "\x00" in text:
            errors["text"] = ["The text cannot contain NUL characters."]
        else:
            cleaned["text"] = text
    if "tags" in data:
        tags = data.get("tags")
        if tags is None:
            tags = []
        if not isinstance(tags, list) or len(tags) > MAX_TAGS:
            errors["tags"] = [f"Give at most {MAX_TAGS} tags as a list."]
        elif not all(isinstance(tag, str) and TAG_PATTERN.match(tag) for tag in tags):
            errors["tags"] = ["Tags are 1-40 lowercase letters, digits, dots, _ and -."]
        else:
            cleaned["tags"] = sorted(set(tags))
    elif not partial:
        cleaned["tags"] = []
    if "classification" in data:
        if data["classification"] not in Classification.values:
            errors["classification"] = [f"One of: {', '.join(Classification.values)}."]
        else:
            cleaned["classification"] = data["classification"]
    if errors:
        raise ValidationError(errors)
    return cleaned


def knowledge_create(*, actor: Actor, **data: Any) -> KnowledgeDocument:
    audit.require(actor, "knowledge:write", action="knowledge.created", resource_type="knowledge")
    cleaned = _clean_document(data, partial=False)
    with transaction.atomic():
        document = KnowledgeDocument(**cleaned, size=len(cleaned["text"]), updated_by=actor.label)
        document.save(force_insert=True)
        audit.emit(
            actor=actor,
            action="knowledge.created",
            resource_type="knowledge",
            resource_id=document.pk,
            details=_document_payload(document),
        )
    return document


def knowledge_update(*, actor: Actor, document_id: Any, **data: Any) -> KnowledgeDocument:
    audit.require(
        actor,
        "knowledge:write",
        action="knowledge.updated",
        resource_type="knowledge",
        resource_id=str(document_id)[:64],
    )
    cleaned = _clean_document(data, partial=True)
    with transaction.atomic():
        document = (
            KnowledgeDocument.objects.select_for_update().filter(pk=_uuid(document_id)).first()
        )
        if document is None:
            raise KnowledgeDocument.DoesNotExist
        for field, value in cleaned.items():
            setattr(document, field, value)
        if "text" in cleaned:
            document.size = len(cleaned["text"])
        document.updated_by = actor.label
        document.save()
        audit.emit(
            actor=actor,
            action="knowledge.updated",
            resource_type="knowledge",
            resource_id=document.pk,
            details={**_document_payload(document), "changed": sorted(cleaned)},
        )
    return document


def knowledge_delete(*, actor: Actor, document_id: Any) -> None:
    audit.require(
        actor,
        "knowledge:write",
        action="knowledge.deleted",
        resource_type="knowledge",
        resource_id=str(document_id)[:64],
    )
    with transaction.atomic():
        document = (
            KnowledgeDocument.objects.select_for_update().filter(pk=_uuid(document_id)).first()
        )
        if document is None:
            raise KnowledgeDocument.DoesNotExist
        payload = _document_payload(document)
        document.delete()
        audit.emit(
            actor=actor,
            action="knowledge.deleted",
            resource_type="knowledge",
            resource_id=payload["id"],
            details=payload,
        )


def _document_payload(document: KnowledgeDocument) -> dict[str, Any]:
    # Title, tags and size: the text stays out of the audit log and of events.
    return {
        "id": str(document.pk),
        "title": document.title,
        "tags": list(document.tags),
        "classification": document.classification,
        "size": document.size,
    }


# --- Data key rotation ---------------------------------------------------------------------------


def _stale_filter(model: type, fields: list[str], version: int) -> Q:
    current = crypto.prefix(version)
    query = Q()
    for name in fields:
        query |= Q(**{f"{name}__isnull": False}) & ~Q(**{f"{name}__startswith": current})
    return query


def _rows_to_reencrypt(version: int) -> int:
    return sum(
        model.objects.filter(_stale_filter(model, fields, version)).count()
        for model, fields in ENCRYPTED_MODELS.items()
    )


def data_key_rotate(*, actor: Actor) -> KeyState:
    """Make a new data key version (the owner): new writes use it at once; a background worker
    re-encrypts the older rows, and reads keep working throughout (old versions still decrypt).
    A rotation still running is a 409."""
    audit.require(actor, DATA_KEYS_ROTATE, action="data_key.rotated", resource_type="organization")
    keys.active_version()  # the first key exists before it is rotated
    tenant = context.require_tenant()
    with transaction.atomic():
        # FOR UPDATE waits for the writes that read the old version (FOR SHARE) to commit.
        state = KeyState.objects.select_for_update().get(pk=SINGLETON_PK)
        if state.is_rotating:
            raise Conflict(
                "rotation_in_progress",
                f"A rotation is still re-encrypting ({state.rows_done} of {state.rows_total}).",
            )
        new_version = state.active_version + 1
        keystore.create_data_key(str(tenant.public_id), new_version)
        now = timezone.now()
        state.active_version = new_version
        state.rotation_started_at = now
        state.rotation_heartbeat_at = now
        state.rotation_finished_at = None
        state.rotated_by = actor.label
        state.rows_done = 0
        state.rows_total = _rows_to_reencrypt(new_version)
        state.save()
        audit.emit(
            actor=actor,
            action="data_key.rotated",
            resource_type="organization",
            resource_id=str(tenant.public_id),
            details={"version": new_version, "rows": state.rows_total},
        )
        transaction.on_commit(lambda: reencrypt_in_background(tenant))
    return state


def reencrypt_in_background(tenant: Any) -> threading.Thread:
    def run() -> None:
        try:
            with context.tenant_context(tenant):
                reencrypt_run()
        except Exception:
            logger.exception("re-encryption of %s stopped; resume it", tenant.slug)
        finally:
            connection.close()

    thread = threading.Thread(target=run, name=f"reencrypt-{tenant.slug}", daemon=True)
    thread.start()
    return thread


def rotation_resume(*, actor: Actor) -> KeyState:
    """Start the re-encryption again for a rotation whose worker stopped (the owner)."""
    audit.require(
        actor, DATA_KEYS_ROTATE, action="data_key.rotation_resumed", resource_type="organization"
    )
    state = keys.state()
    if not state.is_rotating:
        raise Conflict("no_rotation", "No rotation is running.")
    tenant = context.require_tenant()
    with transaction.atomic():
        audit.emit(
            actor=actor,
            action="data_key.rotation_resumed",
            resource_type="organization",
            resource_id=str(tenant.public_id),
            details={"version": state.active_version, "rows_done": state.rows_done},
        )
        transaction.on_commit(lambda: reencrypt_in_background(tenant))
    return state


def rotation_is_stalled(state: KeyState) -> bool:
    if not state.is_rotating or state.rotation_heartbeat_at is None:
        return state.is_rotating
    age = (timezone.now() - state.rotation_heartbeat_at).total_seconds()
    return age > ROTATION_STALE_SECONDS


def reencrypt_run(*, max_batches: int | None = None) -> bool:
    """Re-encrypt this organization's rows under the active version, batch by batch, recording
    progress; returns True when the rotation finished. One worker per organization (an advisory
    lock): a second one returns False at once. Safe to kill anywhere: each row is rewritten only
    if unchanged since it was read, and a resumed run picks up the rows still on old versions."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))", [ROTATION_LOCK_CLASS]
        )
        if not cursor.fetchone()[0]:
            return False
    try:
        return _reencrypt(max_batches)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_unlock(%s, hashtext(current_schema()))", [ROTATION_LOCK_CLASS]
            )


def _reencrypt(max_batches: int | None) -> bool:
    batches = 0
    while True:
        state = keys.state()
        if not state.is_rotating:
            return True
        version = state.active_version
        done, budget = 0, ROTATION_BATCH
        # One commit per batch (its rows and its progress), not one per row.
        with transaction.atomic():
            for model, fields in ENCRYPTED_MODELS.items():
                # Locked for the batch (rows a writer holds are skipped, and picked up by a
                # later batch): nobody changes them between their read and their rewrite.
                rows = list(
                    model.objects.select_for_update(skip_locked=True)
                    .filter(_stale_filter(model, fields, version))
                    .order_by("pk")
                    .only("pk", *fields)[:budget]
                )
                changed = [row for row in rows if _reencrypt_row(fields, row, version)]
                if changed:
                    model.objects.bulk_update(changed, fields, batch_size=ROTATION_BATCH)
                done += len(changed)
                budget -= len(rows)
                if budget <= 0:
                    break
            if done:
                KeyState.objects.filter(pk=SINGLETON_PK).update(
                    rows_done=_progress(done), rotation_heartbeat_at=timezone.now()
                )
        if done == 0 and not _rows_to_reencrypt(version):
            _finish(version)
            return True
        batches += 1
        if max_batches is not None and batches >= max_batches:
            return False


def _progress(done: int) -> Any:
    from django.db.models import F
    from django.db.models.functions import Least

    return Least(F("rows_done") + done, F("rows_total"))


def _reencrypt_row(fields: list[str], row: Any, version: int) -> bool:
    """Put the row's columns, encrypted again under `version`, in its attributes (stored form)."""
    current = crypto.prefix(version)
    changed = False
    for name in fields:
        stored = row.__dict__.get(name)
        if stored is None or str(stored).startswith(current):
            row.__dict__[name] = None if stored is None else str(stored)
            continue
        row.__dict__[name] = reencrypt(row, name, str(stored), version)
        changed = True
    return changed


def _finish(version: int) -> None:
    tenant = context.require_tenant()
    with transaction.atomic():
        state = KeyState.objects.select_for_update().get(pk=SINGLETON_PK)
        if not state.is_rotating or state.active_version != version:
            return
        state.rotation_finished_at = timezone.now()
        state.rows_done = state.rows_total
        state.save(update_fields=["rotation_finished_at", "rows_done"])
        audit.emit(
            actor=Actor.system("re-encryption"),
            action="data_key.rotation_finished",
            resource_type="organization",
            resource_id=str(tenant.public_id),
            details={"version": version, "rows": state.rows_total},
        )


def _uuid(value: Any) -> Any:
    import uuid

    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError):
        return None
