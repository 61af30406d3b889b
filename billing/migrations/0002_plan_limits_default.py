"""Each default plan's limits per resource (the `api` limit is the plan's requests_per_minute)."""

from django.db import migrations

LIMITS = {
    "free": {"tasks": (60, 60), "publish": (100, 1), "usage_events": (60, 60)},
    "team": {"tasks": (600, 60), "publish": (1000, 1), "usage_events": (600, 60)},
    "enterprise": {"tasks": (6000, 60), "publish": (10000, 1), "usage_events": (6000, 60)},
}


def forwards(apps, schema_editor):
    Plan = apps.get_model("tenants", "Plan")
    PlanLimit = apps.get_model("billing", "PlanLimit")
    for plan in Plan.objects.filter(slug__in=LIMITS):
        for resource, (limit, window) in LIMITS[plan.slug].items():
            PlanLimit.objects.get_or_create(
                plan=plan, resource=resource, defaults={"limit": limit, "window_seconds": window}
            )


def backwards(apps, schema_editor):
    apps.get_model("billing", "PlanLimit").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_billing_initial"), ("tenants", "0002_plans_default")]
    operations = [migrations.RunPython(forwards, backwards)]
