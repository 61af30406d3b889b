"""Which apps migrate where: django-tenants' rule (shared apps in `public`, tenant apps in an
organization's schema) on every shard, not only on the alias `default`."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connections
from django_tenants.routers import TenantSyncRouter


class ShardSyncRouter(TenantSyncRouter):
    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any):
        # django-tenants refuses every alias but `default`. Shards are other aliases whose
        # connection `tenants.context` binds as `default` while they migrate.
        connection = connections[db]
        if not hasattr(connection, "schema_name"):
            return False
        if connection.schema_name == settings.PUBLIC_SCHEMA_NAME:
            installed = settings.SHARED_APPS
        else:
            installed = settings.TENANT_APPS
        # An answer either way: django-tenants' own router (listed after this one, as its app
        # check requires) would refuse every alias but `default`.
        return self.app_in_list(app_label, installed)
