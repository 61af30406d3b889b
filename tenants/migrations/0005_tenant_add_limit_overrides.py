"""Staff overrides of the plan's limits, per organization (empty: the plan's)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("tenants", "0004_plan_allowed_agent_permissions")]

    operations = [
        migrations.AddField(
            model_name="tenant",
            name="max_agents_override",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="tenant",
            name="max_cpu_millicores_override",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="tenant",
            name="max_instance_cpu_millicores_override",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="tenant",
            name="max_instance_memory_mb_override",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="tenant",
            name="max_instances_override",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="tenant",
            name="max_memory_mb_override",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="tenant",
            name="messages_per_month_override",
            field=models.PositiveBigIntegerField(blank=True, null=True),
        ),
    ]
