"""Plans that allowed every tool permission also allow the new `secrets:*` (tools reading the
organization's secrets they are granted by name); plans that were narrowed stay as they are."""

from django.db import migrations

EVERY_PERMISSION_BEFORE = {"config:read", "kv:read", "kv:write", "publish"}
SECRETS_FAMILY = "secrets:*"


def allow_secrets(apps, schema_editor):
    Plan = apps.get_model("tenants", "Plan")
    for plan in Plan.objects.all():
        allowed = list(plan.allowed_tool_permissions or [])
        if set(allowed) >= EVERY_PERMISSION_BEFORE and SECRETS_FAMILY not in allowed:
            plan.allowed_tool_permissions = [*allowed, SECRETS_FAMILY]
            plan.save(update_fields=["allowed_tool_permissions"])


def disallow_secrets(apps, schema_editor):
    Plan = apps.get_model("tenants", "Plan")
    for plan in Plan.objects.all():
        allowed = list(plan.allowed_tool_permissions or [])
        if SECRETS_FAMILY in allowed:
            plan.allowed_tool_permissions = [name for name in allowed if name != SECRETS_FAMILY]
            plan.save(update_fields=["allowed_tool_permissions"])


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0012_merge_portal_wording"),
    ]

    operations = [migrations.RunPython(allow_secrets, disallow_secrets)]
