"""Every organization's schema gets its resource pool row and config state row (pk=1)."""

from django.db import migrations


def create_rows(apps, schema_editor):
    apps.get_model("agents", "ResourcePool").objects.get_or_create(pk=1)
    apps.get_model("agents", "ConfigState").objects.get_or_create(pk=1)


class Migration(migrations.Migration):
    dependencies = [("agents", "0001_initial")]

    operations = [migrations.RunPython(create_rows, migrations.RunPython.noop)]
