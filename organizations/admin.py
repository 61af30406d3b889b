"""Staff admin on the public host: organizations, their domains, plans and the spare schema pool."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

from agents import services as agent_services
from agents.selectors import LIMIT_NAMES
from core.actors import Actor
from credentials import services as credential_services
from organizations import services, support
from tenants import residency
from tenants.models import (
    Domain,
    Plan,
    SigningKey,
    SigningKeyStatus,
    SpareSchema,
    SupportSession,
    Tenant,
)

LIMIT_OVERRIDE_FIELDS = [f"{name}_override" for name in LIMIT_NAMES]
# A reason box that fits a phone's width too.
REASON_TEXTAREA = {
    "rows": 3,
    "cols": 60,
    "style": "width:100%;max-width:40em;box-sizing:border-box",
}

# What staff read next to each override: the limit in the product's words, and its unit.
OVERRIDE_TEXTS = {
    "max_agents": ("Agents", "agent definitions"),
    "max_instances": ("Running instances", "instances at once"),
    "max_cpu_millicores": ("CPU for the whole organization", "millicores; 1000 = 1 vCPU"),
    "max_memory_mb": ("Memory for the whole organization", "MB; 1024 = 1 GB"),
    "max_instance_cpu_millicores": ("CPU per instance", "millicores; 1000 = 1 vCPU"),
    "max_instance_memory_mb": ("Memory per instance", "MB; 1024 = 1 GB"),
    "messages_per_month": ("Messages per month", "messages a calendar month (UTC)"),
}

# Platform staff have no use for Django's permission groups: roles live in each organization.
if admin.site.is_registered(Group):
    admin.site.unregister(Group)


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0
    fields = ["domain", "is_primary"]
    readonly_fields = ["domain", "is_primary"]
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Tenant | None = None) -> bool:
        return False


class TenantAdminForm(forms.ModelForm):
    region = forms.ChoiceField(label="Home region")

    class Meta:
        model = Tenant
        fields = ["name", "plan", "region", "residency_policy", *LIMIT_OVERRIDE_FIELDS]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["region"].choices = list(settings.REGIONS.items())

    def clean(self) -> dict:
        cleaned = super().clean()
        region, policy = cleaned.get("region"), cleaned.get("residency_policy")
        changed = {"region", "residency_policy"} & set(self.changed_data)
        if region and policy and changed:
            # The one placement check: it records the refusal in both logs.
            try:
                residency.check_placement(
                    actor=Actor.for_user(self.request.user, self.request),
                    tenant=self.instance,
                    region=region,
                    policy=policy,
                    purpose=residency.Purpose.REGION_CHANGE,
                )
            except residency.ResidencyViolation as error:
                raise ValidationError({"region": error.message}) from error
        return cleaned


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    form = TenantAdminForm
    list_display = [
        "name",
        "slug",
        "plan",
        "region",
        "residency_policy",
        "shard",
        "status",
        "created_at",
    ]
    list_filter = ["plan", "region", "residency_policy", "shard", "status"]
    search_fields = ["name", "slug", "domains__domain", "public_id"]
    readonly_fields = [
        "public_id",
        "slug",
        "schema_name",
        "shard",
        "status",
        "created_at",
        "suspended_at",
        "deletion_requested_at",
        "deletion_requested_by",
        "deletion_scheduled_for",
    ]
    fields = [
        "name",
        "plan",
        "public_id",
        "slug",
        "schema_name",
        "shard",
        "region",
        "residency_policy",
        "status",
        "created_at",
        "suspended_at",
        "deletion_requested_at",
        "deletion_requested_by",
        "deletion_scheduled_for",
        # Staff overrides of the plan's limits (empty: the plan's); see agents.services.
        *LIMIT_OVERRIDE_FIELDS,
    ]
    inlines = [DomainInline]
    actions = [
        "open_support_session",
        "suspend",
        "reactivate",
        "cancel_deletion",
        "delete_organizations",
    ]
    list_select_related = ["plan"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Organizations are created by provisioning (signup or `manage.py provision_tenant`).
        return False

    def formfield_for_dbfield(self, db_field, request: HttpRequest, **kwargs):
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        name = db_field.name.removesuffix("_override")
        if field is not None and name in OVERRIDE_TEXTS:
            label, unit = OVERRIDE_TEXTS[name]
            field.label = f"{label} (override)"
            field.help_text = f"In {unit}. Empty: the plan's limit applies."
        return field

    def has_delete_permission(self, request: HttpRequest, obj: Tenant | None = None) -> bool:
        # Deletion drops a schema: only through the "Delete organizations" action's service.
        return False

    def get_form(self, request: HttpRequest, obj: Tenant | None = None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        form.request = request
        return form

    def save_model(self, request: HttpRequest, obj: Tenant, form, change: bool) -> None:
        if {"region", "residency_policy"} & set(form.changed_data):
            services.tenant_residency_set(
                actor=Actor.for_user(request.user, request),
                tenant=obj,
                region=form.cleaned_data["region"],
                residency_policy=form.cleaned_data["residency_policy"],
            )
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

    @admin.action(
        description="Open a support session (read-only, time-boxed)", permissions=["change"]
    )
    def open_support_session(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        """Asks for a reason and a duration, opens the session, then hands the browser over to
        the organization's host (support_handoff.html posts a one-time token there)."""
        tenants = list(queryset[:2])
        if len(tenants) != 1:
            self.message_user(request, "Select one organization.", messages.ERROR)
            return None
        tenant = tenants[0]
        form = SupportSessionForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            try:
                session = support.support_session_open(
                    actor=Actor.for_user(request.user, request),
                    tenant=tenant,
                    reason=form.cleaned_data["reason"],
                    minutes=int(form.cleaned_data["minutes"]),
                )
            except PermissionDenied as error:
                self.message_user(request, str(error), messages.ERROR)
                return None
            except ValidationError as error:
                for field, errors in error.message_dict.items():
                    form.add_error(field if field in form.fields else None, errors)
            else:
                return support_handoff_page(request, self.admin_site, session)
        return render(
            request,
            "admin/organizations/support_open.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Open a support session into {tenant.name}",
                "tenant": tenant,
                "form": form,
            },
        )

    @admin.action(description="Reactivate selected organizations", permissions=["change"])
    def reactivate(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._each(request, queryset, services.tenant_reactivate, "reactivated")

    @admin.action(description="Cancel the requested deletion", permissions=["change"])
    def cancel_deletion(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._each(
            request, queryset, services.organization_deletion_cancel, "kept (deletion cancelled)"
        )

    @admin.action(
        description="Delete selected organizations now (destroys their keys, drops their data)",
        permissions=["change"],
    )
    def delete_organizations(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._each(request, queryset, services.tenant_delete, "deleted")


class SuspendForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs=REASON_TEXTAREA),
        max_length=services.SUSPENSION_REASON_MAX_LENGTH,
        help_text="Why: recorded in the platform's and the organization's audit log.",
    )
    confirm = forms.BooleanField(label="Yes, suspend them now")


class SupportSessionForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs=REASON_TEXTAREA),
        max_length=support.REASON_MAX_LENGTH,
        help_text="Why you need to see the organization's data (a ticket, the customer's "
        "request): shown to its members and recorded in both audit logs.",
    )
    minutes = forms.TypedChoiceField(
        label="For",
        choices=list(support.DURATIONS.items()),
        coerce=int,
        initial=support.DEFAULT_MINUTES,
        help_text="The session ends by itself then; the organization's owner can end it sooner.",
    )


def support_handoff_page(
    request: HttpRequest, site: admin.AdminSite, session: SupportSession
) -> HttpResponse:
    """A page that posts the session's one-time token to the organization's host (a form POST,
    not a redirect: the token must not appear in a URL)."""
    # The admin's own views send it uncached (never_cache): the token is not kept anywhere.
    return render(
        request,
        "admin/organizations/support_handoff.html",
        {
            **site.each_context(request),
            "title": f"Support session into {session.tenant.name}",
            "session": session,
            "action": session.tenant.url.rstrip("/")
            + reverse("organizations:support-start", urlconf=settings.ROOT_URLCONF),
            "token": support.support_token_make(session=session),
        },
    )


@admin.register(SupportSession)
class SupportSessionAdmin(admin.ModelAdmin):
    """Support sessions, open and past: opened from Organizations (its action), only ended here."""

    list_display = [
        "tenant",
        "staff_email",
        "reason",
        "started_at",
        "until",
        "ended_at",
        "ended_by",
    ]
    list_filter = ["ended_at"]
    search_fields = ["tenant__slug", "tenant__name", "staff_email", "reason"]
    list_select_related = ["tenant"]
    fields = list_display
    readonly_fields = list_display
    actions = ["continue_session", "end_now"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # a session changes only by ending (the action below, through the service)

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_end_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_staff

    @admin.action(
        description="Continue to the organization's portal (your open session)",
        permissions=["end"],
    )
    def continue_session(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        sessions = list(queryset.select_related("tenant")[:2])
        now = timezone.now()
        if len(sessions) != 1 or sessions[0].staff_id != request.user.pk:
            self.message_user(request, "Select one support session of yours.", messages.ERROR)
            return None
        if not sessions[0].is_open_at(now):
            self.message_user(request, "That support session is over.", messages.ERROR)
            return None
        return support_handoff_page(request, self.admin_site, sessions[0])

    @admin.action(description="End selected support sessions now", permissions=["end"])
    def end_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        actor = Actor.for_user(request.user, request)
        for session in queryset.select_related("tenant"):
            support.support_session_end(actor=actor, tenant=session.tenant, session_id=session.pk)
        self.message_user(request, "The selected support sessions are ended.", messages.SUCCESS)


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
