"""The default plans: free, team and enterprise."""

from django.db import migrations

PLANS = [
    dict(
        slug="free",
        name="Free",
        max_agents=3,
        max_instances=5,
        max_cpu_millicores=2000,
        max_memory_mb=4096,
        max_instance_cpu_millicores=1000,
        max_instance_memory_mb=2048,
        messages_per_month=100_000,
        requests_per_minute=60,
        audit_retention_days=30,
        price_monthly_cents=0,
        price_per_thousand_messages_cents=0,
    ),
    dict(
        slug="team",
        name="Team",
        max_agents=25,
        max_instances=50,
        max_cpu_millicores=32000,
        max_memory_mb=65536,
        max_instance_cpu_millicores=4000,
        max_instance_memory_mb=16384,
        messages_per_month=5_000_000,
        requests_per_minute=600,
        audit_retention_days=365,
        price_monthly_cents=49_900,
        price_per_thousand_messages_cents=5,
    ),
    dict(
        slug="enterprise",
        name="Enterprise",
        max_agents=500,
        max_instances=2000,
        max_cpu_millicores=512000,
        max_memory_mb=1048576,
        max_instance_cpu_millicores=16000,
        max_instance_memory_mb=65536,
        messages_per_month=200_000_000,
        requests_per_minute=6000,
        audit_retention_days=2555,
        price_monthly_cents=499_900,
        price_per_thousand_messages_cents=2,
    ),
]


def create_plans(apps, schema_editor):
    Plan = apps.get_model("tenants", "Plan")
    for plan in PLANS:
        Plan.objects.update_or_create(slug=plan["slug"], defaults=plan)


def delete_plans(apps, schema_editor):
    Plan = apps.get_model("tenants", "Plan")
    Plan.objects.filter(slug__in=[plan["slug"] for plan in PLANS], tenants__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [("tenants", "0001_initial")]
    operations = [migrations.RunPython(create_plans, delete_plans)]
