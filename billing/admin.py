"""Staff admin of billing on the public host: usage across organizations (top consumers this
month), the price table, plan limits per resource, temporary limit overrides. Every write goes
through billing.services (staff only, audited)."""

from __future__ import annotations

from datetime import UTC

from django.contrib import admin
from django.db.models import Sum
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone

from billing import services
from billing.ledger import BUILTIN_METERS
from billing.models import (
    Budget,
    Invoice,
    InvoiceLine,
    LimitOverride,
    PlanLimit,
    PlanQuota,
    Price,
    UsageBucket,
)
from core.actors import Actor


def _actor(request: HttpRequest) -> Actor:
    return Actor.for_user(request.user, request)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Listed and viewed, never added, changed or deleted here."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(UsageBucket)
class UsageBucketAdmin(ReadOnlyAdmin):
    """The ledger as rolled up into PostgreSQL (hours still in Redis are not listed here)."""

    list_display = ["tenant", "meter", "hour", "groups", "value"]
    list_filter = ["meter", "tenant__plan"]
    date_hierarchy = "hour"
    list_select_related = ["tenant"]
    ordering = ["-hour"]
    search_fields = ["tenant__slug", "meter"]

    def get_urls(self):
        urls = super().get_urls()
        top = path(
            "top/",
            self.admin_site.admin_view(self.top_consumers),
            name="billing_usagebucket_top",
        )
        return [top, *urls]

    def top_consumers(self, request: HttpRequest):
        """The organizations that used most of each meter this month, per plan."""
        now = timezone.now().astimezone(UTC)
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        meter = request.GET.get("meter") or "api_requests"
        rows = (
            UsageBucket.objects.filter(meter=meter, hour__gte=start)
            .values("tenant__slug", "tenant__name", "tenant__plan__name")
            .annotate(total=Sum("value"))
            .order_by("-total")[:50]
        )
        per_plan = (
            UsageBucket.objects.filter(meter=meter, hour__gte=start)
            .values("tenant__plan__name")
            .annotate(total=Sum("value"))
            .order_by("-total")
        )
        meters = sorted(
            set(BUILTIN_METERS)
            | set(UsageBucket.objects.filter(hour__gte=start).values_list("meter", flat=True))
        )
        return TemplateResponse(
            request,
            "admin/billing/top_consumers.html",
            {
                **self.admin_site.each_context(request),
                "title": "Top consumers this month",
                "meter": meter,
                "meters": meters,
                "rows": rows,
                "per_plan": per_plan,
                "start": start,
                "opts": self.model._meta,
            },
        )


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):
    list_display = ["meter", "model", "unit_price", "per_units", "currency"]
    search_fields = ["meter", "model"]

    def save_model(self, request: HttpRequest, obj: Price, form, change: bool) -> None:
        services.price_save(actor=_actor(request), price=obj, fields=form.changed_data)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(PlanQuota)
class PlanQuotaAdmin(admin.ModelAdmin):
    """Monthly quotas per plan on meters other than messages (those are the plan's own field)."""

    list_display = ["plan", "meter", "limit", "is_hard"]
    list_filter = ["plan", "meter", "is_hard"]

    def save_model(self, request: HttpRequest, obj: PlanQuota, form, change: bool) -> None:
        services.plan_limit_save(actor=_actor(request), plan_limit=obj, fields=form.changed_data)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Budget)
class BudgetAdmin(ReadOnlyAdmin):
    """Organizations' budgets, read only here (owners and admins set them)."""

    list_display = ["tenant", "subject_type", "subject_id", "amount", "currency", "updated_at"]
    list_filter = ["subject_type"]


@admin.register(PlanLimit)
class PlanLimitAdmin(admin.ModelAdmin):
    list_display = ["plan", "resource", "limit", "window_seconds"]
    list_filter = ["plan", "resource"]

    def save_model(self, request: HttpRequest, obj: PlanLimit, form, change: bool) -> None:
        services.plan_limit_save(actor=_actor(request), plan_limit=obj, fields=form.changed_data)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(LimitOverride)
class LimitOverrideAdmin(admin.ModelAdmin):
    """Temporary limits: of a resource's rate limit, or of a meter's monthly quota (expiry and
    reason required); they are never edited, they expire."""

    list_display = [
        "tenant",
        "resource",
        "meter",
        "limit",
        "window_seconds",
        "expires_at",
        "created_by",
    ]
    list_filter = ["resource", "meter"]
    fields = ["tenant", "resource", "meter", "limit", "window_seconds", "expires_at", "reason"]
    autocomplete_fields = ["tenant"]

    def save_model(self, request: HttpRequest, obj: LimitOverride, form, change: bool) -> None:
        saved = services.limit_override_create(
            actor=_actor(request),
            tenant=obj.tenant,
            resource=obj.resource,
            meter=obj.meter,
            limit=obj.limit,
            window_seconds=obj.window_seconds,
            expires_at=obj.expires_at,
            reason=obj.reason,
        )
        obj.pk = saved.pk

    def get_form(self, request: HttpRequest, obj=None, change: bool = False, **kwargs):
        """The service's refusals (a bad meter, a bad expiry) on the form, not a 500."""
        form_class = super().get_form(request, obj, change=change, **kwargs)

        class OverrideForm(form_class):
            def _post_clean(self) -> None:
                super()._post_clean()
                data = self.cleaned_data
                if not {"tenant", "limit", "expires_at", "reason"} <= set(data):
                    return  # the form's own errors say what is missing
                from django.core.exceptions import ValidationError

                try:
                    services.limit_override_check(
                        tenant=data["tenant"],
                        resource=data.get("resource") or "",
                        meter=data.get("meter") or "",
                        limit=data.get("limit"),
                        window_seconds=data.get("window_seconds") or 60,
                        expires_at=data.get("expires_at"),
                        reason=data.get("reason") or "",
                    )
                except ValidationError as refused:
                    for name, messages in refused.message_dict.items():
                        self.add_error(name if name in self.fields else None, messages)

        return OverrideForm

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return obj is None

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class InvoiceLineInline(admin.TabularInline):
    model = InvoiceLine
    extra = 0
    can_delete = False
    fields = ["position", "description", "quantity", "unit", "unit_price", "amount"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Invoice)
class InvoiceAdmin(ReadOnlyAdmin):
    """Closed invoices: read only."""

    list_display = ["number", "tenant", "period_start", "total", "currency", "issued_at"]
    list_filter = ["currency"]
    search_fields = ["number", "tenant__slug"]
    inlines = [InvoiceLineInline]
