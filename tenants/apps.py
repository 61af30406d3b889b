from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Organizations and plans"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from tenants import guard

        guard.install_if_enabled()
