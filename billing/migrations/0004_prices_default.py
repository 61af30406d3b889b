"""A starting price table: LLM tokens at 0.002 USD per thousand for any model (staff refine it
per model in the admin). Messages are priced by each plan's `price_per_thousand_messages_cents`."""

from decimal import Decimal

from django.db import migrations


def forwards(apps, schema_editor):
    Price = apps.get_model("billing", "Price")
    Price.objects.get_or_create(
        meter="llm_tokens",
        model="",
        defaults={"per_units": 1000, "unit_price": Decimal("0.002"), "currency": "USD"},
    )


def backwards(apps, schema_editor):
    apps.get_model("billing", "Price").objects.filter(meter="llm_tokens", model="").delete()


class Migration(migrations.Migration):
    dependencies = [("billing", "0003_invoice_price_plan_change")]
    operations = [migrations.RunPython(forwards, backwards)]
