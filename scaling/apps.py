from django.apps import AppConfig


class ScalingConfig(AppConfig):
    """Scale-out operations on top of every layer: shards, moves, rebalancing, fleet migrations
    (docs/scaling.md). No models of its own: the shard map is in `tenants`. The autoscaler, whose
    policies live in each organization's schema, is the `autoscaler` app."""

    name = "scaling"
