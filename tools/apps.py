from django.apps import AppConfig


class ToolsConfig(AppConfig):
    name = "tools"
    verbose_name = "Custom tools"
    default_auto_field = "django.db.models.BigAutoField"
