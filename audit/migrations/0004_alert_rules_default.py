"""The default compliance alert rules, created (switched on) in every schema."""

from django.db import migrations

# Frozen copy: the rules' logic lives in audit.rules, keyed by `code`.
RULES = [
    {
        "code": "failed-logins",
        "name": "Repeated failed logins",
        "description": "Several failed logins for one account within a short window.",
        "severity": "high",
        "parameters": {"threshold": 5, "window_seconds": 300},
    },
    {
        "code": "api-key-every-scope",
        "name": "API key created with every scope",
        "description": "An API key was created that holds every scope there is.",
        "severity": "medium",
        "parameters": {},
    },
    {
        "code": "member-promoted-owner",
        "name": "Member promoted to owner",
        "description": "A member's role was changed to owner.",
        "severity": "high",
        "parameters": {},
    },
    {
        "code": "full-log-export",
        "name": "Whole audit log exported",
        "description": "The audit log was exported without any filter or time range.",
        "severity": "medium",
        "parameters": {},
    },
]


def create_rules(apps, schema_editor):
    AlertRule = apps.get_model("audit", "AlertRule")
    for rule in RULES:
        AlertRule.objects.get_or_create(code=rule["code"], defaults=rule)


def delete_rules(apps, schema_editor):
    AlertRule = apps.get_model("audit", "AlertRule")
    AlertRule.objects.filter(
        code__in=[rule["code"] for rule in RULES], alerts__isnull=True
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_append_only_triggers")]
    operations = [migrations.RunPython(create_rules, delete_rules)]
