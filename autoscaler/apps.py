from django.apps import AppConfig


class AutoscalerConfig(AppConfig):
    """Each organization's autoscaler: per-agent policies, decisions over the heartbeat metrics,
    and the instances it requests and stops as the system (docs/scaling.md, "The autoscaler")."""

    name = "autoscaler"
    default_auto_field = "django.db.models.BigAutoField"
