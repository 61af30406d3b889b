"""Plans say which agent permissions definitions may ask for; defaults for the three plans."""

from django.db import migrations, models

import core.agent_permissions

# What each default plan lets agent definitions ask for (core.agent_permissions.CATALOGUE).
ALLOWED = {
    "free": ["messages:read", "messages:publish", "tasks:receive", "config:read"],
    "team": [
        "messages:read",
        "messages:publish",
        "tasks:receive",
        "tasks:publish",
        "config:read",
        "tools:invoke",
        "http:outbound",
    ],
    "enterprise": [
        "messages:read",
        "messages:publish",
        "tasks:receive",
        "tasks:publish",
        "config:read",
        "tools:invoke",
        "http:outbound",
        "agents:spawn",
    ],
}


def set_allowed(apps, schema_editor):
    Plan = apps.get_model("tenants", "Plan")
    for slug, allowed in ALLOWED.items():
        Plan.objects.filter(slug=slug).update(allowed_agent_permissions=allowed)


class Migration(migrations.Migration):
    dependencies = [("tenants", "0003_signing_key")]

    operations = [
        migrations.AddField(
            model_name="plan",
            name="allowed_agent_permissions",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="Agent permissions definitions may ask for.",
                validators=[core.agent_permissions.validate_plan_permissions],
            ),
        ),
        migrations.RunPython(set_allowed, migrations.RunPython.noop),
    ]
