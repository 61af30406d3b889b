"""Staff admin on the public host: organizations, their domains, plans and the spare schema pool."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest

from audit.actors import Actor
from tenants import services
from tenants.models import Domain, Plan, SpareSchema, Tenant


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0
    fields = ["domain", "is_primary"]
    readonly_fields = ["domain", "is_primary"]
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Tenant | None = None) -> bool:
        return False


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "plan", "region", "status", "created_at"]
    list_filter = ["plan", "region", "status"]
    search_fields = ["name", "slug", "domains__domain", "public_id"]
    readonly_fields = [
        "public_id",
        "slug",
        "schema_name",
        "region",
        "status",
        "created_at",
        "suspended_at",
    ]
    fields = [
        "name",
        "plan",
        "public_id",
        "slug",
        "schema_name",
        "region",
        "status",
        "created_at",
        "suspended_at",
    ]
    inlines = [DomainInline]
    actions = ["suspend", "reactivate", "delete_organizations"]
    list_select_related = ["plan"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Organizations are created by provisioning (signup or `manage.py provision_tenant`).
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Tenant | None = None) -> bool:
        # Deletion drops a schema: only through the "Delete organizations" action's service.
        return False

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def save_model(self, request: HttpRequest, obj: Tenant, form, change: bool) -> None:
        services.tenant_update(
            actor=Actor.for_user(request.user, request),
            tenant=obj,
            name=form.cleaned_data["name"],
            plan=form.cleaned_data["plan"],
        )

    def _each(self, request: HttpRequest, queryset: QuerySet, service, done: str) -> None:
        actor = Actor.for_user(request.user, request)
        count = 0
        for tenant in queryset:
            try:
                service(actor=actor, tenant=tenant)
            except PermissionDenied as error:
                self.message_user(request, str(error), messages.ERROR)
                return
            count += 1
        self.message_user(request, f"{count} organization(s) {done}.", messages.SUCCESS)

    @admin.action(description="Suspend selected organizations", permissions=["change"])
    def suspend(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._each(request, queryset, services.tenant_suspend, "suspended")

    @admin.action(description="Reactivate selected organizations", permissions=["change"])
    def reactivate(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._each(request, queryset, services.tenant_reactivate, "reactivated")

    @admin.action(
        description="Delete selected organizations (drops their data)", permissions=["change"]
    )
    def delete_organizations(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._each(request, queryset, services.tenant_delete, "deleted")


@admin.register(Domain)
class DomainAdmin(admin.ModelAdmin):
    list_display = ["domain", "tenant", "is_primary"]
    search_fields = ["domain", "tenant__slug", "tenant__name"]
    list_select_related = ["tenant"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Domain | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Domain | None = None) -> bool:
        return False


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "slug",
        "max_agents",
        "max_instances",
        "messages_per_month",
        "requests_per_minute",
        "price_monthly_cents",
        "is_public",
    ]
    search_fields = ["name", "slug"]

    def save_model(self, request: HttpRequest, obj: Plan, form, change: bool) -> None:
        services.plan_save(
            actor=Actor.for_user(request.user, request), plan=obj, fields=form.changed_data
        )

    def has_delete_permission(self, request: HttpRequest, obj: Plan | None = None) -> bool:
        return False


@admin.register(SpareSchema)
class SpareSchemaAdmin(admin.ModelAdmin):
    list_display = ["schema_name", "fingerprint", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: SpareSchema | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: SpareSchema | None = None) -> bool:
        return False
