"""Staff admin on the public host: organizations, their domains, plans and the spare schema pool."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from agents import services as agent_services
from agents.selectors import LIMIT_NAMES
from core.actors import Actor
from credentials import services as credential_services
from organizations import services
from tenants.models import (
    Domain,
    Plan,
    SigningKey,
    SigningKeyStatus,
    SpareSchema,
    Tenant,
)

LIMIT_OVERRIDE_FIELDS = [f"{name}_override" for name in LIMIT_NAMES]


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
        # Staff overrides of the plan's limits (empty: the plan's); see agents.services.
        *LIMIT_OVERRIDE_FIELDS,
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

    def save_model(self, request: HttpRequest, obj: Tenant, form, change: bool) -> None:
        services.tenant_update(
            actor=Actor.for_user(request.user, request),
            tenant=obj,
            name=form.cleaned_data["name"],
            plan=form.cleaned_data["plan"],
        )
        overrides = {
            field.removesuffix("_override"): form.cleaned_data[field]
            for field in LIMIT_OVERRIDE_FIELDS
            if field in form.changed_data
        }
        if overrides:
            agent_services.organization_limits_set(
                actor=Actor.for_user(request.user, request), tenant=obj, overrides=overrides
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
    def suspend(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        """Asks for a reason and a confirmation first (an intermediate page)."""
        form = SuspendForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return render(
                request,
                "admin/organizations/suspend_confirmation.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Suspend organizations",
                    "tenants": list(queryset),
                    "form": form,
                },
            )
        reason = form.cleaned_data["reason"]
        self._each(
            request,
            queryset,
            lambda *, actor, tenant: services.tenant_suspend(
                actor=actor, tenant=tenant, reason=reason
            ),
            "suspended",
        )
        return None

    @admin.action(description="Reactivate selected organizations", permissions=["change"])
    def reactivate(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._each(request, queryset, services.tenant_reactivate, "reactivated")

    @admin.action(
        description="Delete selected organizations (drops their data)", permissions=["change"]
    )
    def delete_organizations(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._each(request, queryset, services.tenant_delete, "deleted")


class SuspendForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        max_length=services.SUSPENSION_REASON_MAX_LENGTH,
        help_text="Why: recorded in the platform's and the organization's audit log.",
    )
    confirm = forms.BooleanField(label="Yes, suspend them now")


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


@admin.register(SigningKey)
class SigningKeyAdmin(admin.ModelAdmin):
    """The JWT signing keys. Rotation and retirement go through organizations.services."""

    list_display = ["kid", "status", "created_at", "rotated_at", "verify_until", "retired_at"]
    list_filter = ["status"]
    fields = ["kid", "status", "public_key_pem", "created_at", "rotated_at", "verify_until"]
    readonly_fields = fields
    actions = ["rotate", "rotate_and_retire_now", "retire_now"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: SigningKey | None = None) -> bool:
        return False

    def _rotate(self, request: HttpRequest, queryset: QuerySet, *, retire_now: bool) -> None:
        if not queryset.filter(status=SigningKeyStatus.ACTIVE).exists():
            self.message_user(request, "Select the active key to rotate it.", messages.ERROR)
            return
        try:
            key = credential_services.signing_key_rotate(
                actor=Actor.for_user(request.user, request), retire_previous_now=retire_now
            )
        except PermissionDenied as error:
            self.message_user(request, str(error), messages.ERROR)
            return
        note = "retired at once" if retire_now else "verifies until its tokens expire"
        self.message_user(
            request, f"New active key {key.kid}; the previous key {note}.", messages.SUCCESS
        )

    @admin.action(description="Rotate: a new key signs from now on", permissions=["change"])
    def rotate(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._rotate(request, queryset, retire_now=False)

    @admin.action(
        description="Rotate and retire the old key now (compromised: its tokens stop working)",
        permissions=["change"],
    )
    def rotate_and_retire_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._rotate(request, queryset, retire_now=True)

    @admin.action(description="Retire selected previous keys now", permissions=["change"])
    def retire_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        actor = Actor.for_user(request.user, request)
        retired = []
        for key in queryset.filter(status=SigningKeyStatus.PREVIOUS):
            credential_services.signing_key_retire(actor=actor, kid=key.kid)
            retired.append(key.kid)
        self.message_user(request, f"{len(retired)} key(s) retired.", messages.SUCCESS)
