from django.apps import AppConfig


class ScalingConfig(AppConfig):
    """Scale-out operations on top of every layer: shards, moves, rebalancing, fleet migrations,
    the autoscaler (docs/scaling.md). No models of its own: the shard map is in `tenants`."""

    name = "scaling"
