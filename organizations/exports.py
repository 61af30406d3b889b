"""The organization's full export: a JSON archive of everything it owns, secrets excluded.

Every table of the organization's schema (its apps in TENANT_APPS) is written, row by row,
except what is a credential rather than data: secrets' values (the secrets table is left out),
password and key hashes, refresh tokens, sessions and the data key state. Encrypted columns are
written decrypted (it is the organization's own data, going to its owner).
"""

from __future__ import annotations

import datetime
import decimal
import json
import uuid
from collections.abc import Iterator
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import models

from tenants import context

FORMAT = "agentplane-export/1"
# Whole tables left out: credentials and machinery, not the organization's data.
EXCLUDED_MODELS = {
    "vault.secret",
    "vault.keystate",
    "credentials.refreshtoken",
    "sessions.session",
    "contenttypes.contenttype",
    "auth.permission",
    "auth.group",
}
# Columns left out wherever they appear.
EXCLUDED_FIELD_MARKERS = ("password", "hash", "secret", "token")


def _tenant_models() -> list[type[models.Model]]:
    labels = {app.rsplit(".", 1)[-1] for app in settings.TENANT_APPS}
    found = []
    for model in apps.get_models():
        label = model._meta.label_lower
        if model._meta.app_label not in labels or label in EXCLUDED_MODELS:
            continue
        if model._meta.proxy or not model._meta.managed:
            continue
        found.append(model)
    return sorted(found, key=lambda model: model._meta.label_lower)


def _fields(model: type[models.Model]) -> list[models.Field]:
    return [
        field
        for field in model._meta.concrete_fields
        if not any(marker in field.name.lower() for marker in EXCLUDED_FIELD_MARKERS)
    ]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return str(value)
    if isinstance(value, bytes | memoryview):
        return None  # binary columns are key material or caches, never exported
    return value


def tables() -> list[str]:
    return [model._meta.label_lower for model in _tenant_models()]


def export_chunks(*, region: str) -> Iterator[str]:
    """The archive as JSON text, in pieces (tables are read in batches, never all at once).

    Runs in the organization's context; `region` is the storage label that residency allowed.
    """
    tenant = context.require_tenant()
    header = {
        "format": FORMAT,
        "organization": {
            "id": str(tenant.public_id),
            "slug": tenant.slug,
            "name": tenant.name,
            "region": tenant.region,
            "residency_policy": tenant.residency_policy,
        },
        "storage_region": region,
        "excluded": sorted(EXCLUDED_MODELS)
        + [f"*{marker}* columns" for marker in EXCLUDED_FIELD_MARKERS],
    }
    yield json.dumps(header)[:-1] + ', "tables": {'
    for number, model in enumerate(_tenant_models()):
        fields = _fields(model)
        yield ("," if number else "") + json.dumps(model._meta.label_lower) + ": ["
        first = True
        for row in model.objects.order_by("pk").iterator(chunk_size=500):
            item = {field.attname: _plain(getattr(row, field.attname)) for field in fields}
            yield ("" if first else ",") + json.dumps(item, default=str)
            first = False
        yield "]"
    yield "}}"
