"""Staff admin of the shard map (read-only: shards are added with `manage.py shard_add`), with the
organizations each shard holds; the organizations' list shows and filters by shard."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html

from tenants import shards
from tenants.models import Shard, Tenant


def _organizations_url(shard: str) -> str:
    return f"{reverse('admin:tenants_tenant_changelist')}?shard__exact={shard}"


@admin.register(Shard)
class ShardAdmin(admin.ModelAdmin):
    list_display = ["name", "region", "weight", "database", "organizations", "created_at"]
    list_filter = ["region"]
    fields = ["name", "region", "weight", "database", "organizations", "created_at"]
    readonly_fields = fields
    change_list_template = "admin/scaling/shard_change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Shard]:
        count = (
            Tenant.objects.filter(shard=OuterRef("name"))
            .order_by()
            .values("shard")
            .annotate(n=Count("pk"))
            .values("n")
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                organization_count=Coalesce(Subquery(count, output_field=IntegerField()), Value(0))
            )
        )

    @admin.display(description="Database")
    def database(self, obj: Shard) -> str:
        return shards.redact(obj.url)

    @admin.display(description="Organizations", ordering="organization_count")
    def organizations(self, obj: Shard) -> str:
        return format_html(
            '<a href="{}">{}</a>', _organizations_url(obj.name), obj.organization_count
        )

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        default = shards.get(shards.DEFAULT)
        extra = {
            "default_shard": {
                "name": default.name,
                "region": default.region,
                "weight": default.weight,
                "database": default.display_url,
                "organizations": Tenant.objects.filter(shard=shards.DEFAULT).count(),
                "url": _organizations_url(shards.DEFAULT),
            }
        }
        return super().changelist_view(request, {**extra, **(extra_context or {})})

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # `manage.py shard_add` migrates the database and fills its spare pool

    def has_change_permission(self, request: HttpRequest, obj: Shard | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Shard | None = None) -> bool:
        return False
