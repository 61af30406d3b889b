from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from audit import services
        from tenants import residency

        # tenants sits below audit: its placement check records refusals through this.
        residency.register_refusal_recorder(services.residency_refusal_record)
