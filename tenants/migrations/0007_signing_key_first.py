"""Create the first JWT signing key, so that every process of a fresh deployment agrees on it."""

from django.db import migrations


def create_first_key(apps, schema_editor):
    from credentials import keyring

    SigningKey = apps.get_model("tenants", "SigningKey")
    if SigningKey.objects.filter(status="active").exists():
        return
    new = keyring.generate()
    SigningKey.objects.create(
        kid=new.kid,
        status="active",
        public_key_pem=new.public_key_pem,
        private_key_wrapped=new.private_key_wrapped,
    )


class Migration(migrations.Migration):
    dependencies = [("tenants", "0006_platform_config_default")]

    operations = [migrations.RunPython(create_first_key, migrations.RunPython.noop)]
