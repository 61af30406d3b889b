"""Platform-wide config defaults (staff): the lowest layer of agent configuration."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("tenants", "0005_tenant_add_limit_overrides")]

    operations = [
        migrations.CreateModel(
            name="PlatformConfigDefault",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("key", models.CharField(max_length=200, unique=True)),
                ("value", models.JSONField()),
                ("updated_at", models.DateTimeField(auto_now=True)),
                ("updated_by", models.CharField(blank=True, max_length=254)),
            ],
            options={
                "ordering": ["key"],
            },
        ),
    ]
