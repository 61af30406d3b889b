"""Starting monthly quotas on meters other than messages: LLM tokens (hard) and custom tool runs
(soft: alerts only) on the Free and Team plans. Staff change them in the admin."""

from django.db import migrations

DEFAULTS = {
    "free": [("llm_tokens", 1_000_000, True), ("tool_runs", 1_000, False)],
    "team": [("llm_tokens", 50_000_000, True), ("tool_runs", 100_000, False)],
}


def forwards(apps, schema_editor):
    Plan = apps.get_model("tenants", "Plan")
    PlanQuota = apps.get_model("billing", "PlanQuota")
    for plan in Plan.objects.filter(slug__in=DEFAULTS):
        for meter, limit, is_hard in DEFAULTS[plan.slug]:
            PlanQuota.objects.get_or_create(
                plan=plan, meter=meter, defaults={"limit": limit, "is_hard": is_hard}
            )


def backwards(apps, schema_editor):
    PlanQuota = apps.get_model("billing", "PlanQuota")
    for slug, rows in DEFAULTS.items():
        PlanQuota.objects.filter(plan__slug=slug, meter__in=[m for m, _, _ in rows]).delete()


class Migration(migrations.Migration):
    dependencies = [("billing", "0006_plan_quota_and_budget"), ("tenants", "0002_plans_default")]
    operations = [migrations.RunPython(forwards, backwards)]
