from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Organizations and plans"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core.signals import request_finished, request_started

        from tenants import context, guard

        guard.install_if_enabled()
        request_started.connect(context.close_directory_if_obsolete, dispatch_uid="tenants.dir")
        request_finished.connect(context.close_directory_if_obsolete, dispatch_uid="tenants.dir2")
