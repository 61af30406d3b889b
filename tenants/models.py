"""Plans, organizations (tenants), their domains and the pool of spare schemas: all in `public`."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django_tenants.models import DomainMixin, TenantMixin

from core import tool_permissions
from core.agent_permissions import validate_plan_permissions
from tenants.residency import DEFAULT_POLICY, Policy


class Plan(models.Model):
    """A price list and the limits that come with it; later features enforce the limits."""

    slug = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=80)
    max_agents = models.PositiveIntegerField()
    max_instances = models.PositiveIntegerField()
    max_cpu_millicores = models.PositiveIntegerField(help_text="Total CPU for all instances.")
    max_memory_mb = models.PositiveIntegerField(help_text="Total memory for all instances.")
    max_instance_cpu_millicores = models.PositiveIntegerField()
    max_instance_memory_mb = models.PositiveIntegerField()
    messages_per_month = models.PositiveBigIntegerField()
    requests_per_minute = models.PositiveIntegerField(help_text="Per resource, per organization.")
    audit_retention_days = models.PositiveIntegerField()
    price_monthly_cents = models.PositiveIntegerField()
    price_per_thousand_messages_cents = models.PositiveIntegerField(default=0)
    is_public = models.BooleanField(default=True, help_text="Offered at signup.")
    # Which agent permissions (core.agent_permissions.CATALOGUE) a definition may ask for.
    allowed_agent_permissions = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_plan_permissions],
        help_text="Agent permissions definitions may ask for.",
    )
    # Custom tools (the `tools` app): the most a tool may ask for, and runs at once.
    tool_max_timeout_ms = models.PositiveIntegerField(
        default=10_000, help_text="The longest timeout a custom tool may set, in ms."
    )
    tool_max_memory_mb = models.PositiveIntegerField(
        default=64, help_text="The largest heap a custom tool may set, in MiB."
    )
    tool_concurrency = models.PositiveIntegerField(
        default=2, help_text="Custom tool runs at once, per organization."
    )
    allowed_tool_permissions = models.JSONField(
        default=tool_permissions.default_allowed,
        blank=True,
        validators=[tool_permissions.validate_plan_permissions],
        help_text="Host API permissions custom tools may ask for.",
    )

    class Meta:
        ordering = ["price_monthly_cents"]

    def __str__(self) -> str:
        return self.name


class TenantStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"
    DELETING = "deleting", "Deleting"


class Tenant(TenantMixin):
    """An organization. Its data lives in the PostgreSQL schema `schema_name`."""

    # The id carried by JWTs (`tenant`, `aud`), event namespaces and audit events. A UUID, so
    # that a slug freed by a deletion and signed up again never inherits the old namespace.
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    slug = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=120)
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="tenants")
    # The home region, and the residency policy naming every region its data may be placed in
    # (tenants.residency: every placement is checked there).
    region = models.CharField(max_length=32, help_text="Home region.")
    residency_policy = models.CharField(
        max_length=16,
        choices=Policy.choices,
        default=DEFAULT_POLICY,
        help_text="The regions this organization's data may live in.",
    )
    status = models.CharField(
        max_length=16, choices=TenantStatus.choices, default=TenantStatus.ACTIVE
    )
    created_at = models.DateTimeField(auto_now_add=True)
    suspended_at = models.DateTimeField(null=True, blank=True)
    # Two-phase deletion (organizations.services): requested by the owner, the organization is
    # suspended (its owner may still export) until `deletion_scheduled_for`, then purged.
    deletion_requested_at = models.DateTimeField(null=True, blank=True)
    deletion_requested_by = models.CharField(max_length=254, blank=True)
    deletion_scheduled_for = models.DateTimeField(null=True, blank=True)
    # The owner's security setting (organizations.services.two_factor_requirement_set): members
    # without two-factor authentication are sent to set it up and can do nothing else until then.
    require_two_factor = models.BooleanField(
        default=False, help_text="Every member must use two-factor authentication."
    )
    # Staff overrides of the plan's limits for this organization (empty: the plan's limit).
    # Read through agents.selectors.limits_get; changed through agents.services.
    max_agents_override = models.PositiveIntegerField(null=True, blank=True)
    max_instances_override = models.PositiveIntegerField(null=True, blank=True)
    max_cpu_millicores_override = models.PositiveIntegerField(null=True, blank=True)
    max_memory_mb_override = models.PositiveIntegerField(null=True, blank=True)
    max_instance_cpu_millicores_override = models.PositiveIntegerField(null=True, blank=True)
    max_instance_memory_mb_override = models.PositiveIntegerField(null=True, blank=True)
    messages_per_month_override = models.PositiveBigIntegerField(null=True, blank=True)
    # The shard (tenants.shards) whose database holds `schema_name`: `default` is DATABASE_URL's.
    shard = models.CharField(max_length=40, default="default", db_index=True)
    # A move's switch (scaling.moves): until then, requests get 503 with Retry-After. A deadline,
    # not a flag, so that a mover killed mid-switch never leaves the organization paused.
    writes_paused_until = models.DateTimeField(null=True, blank=True)

    # Provisioning creates (or claims) the schema itself; see organizations.services.
    auto_create_schema = False
    auto_drop_schema = False

    class Meta:
        verbose_name = "organization"
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=TenantStatus.values), name="tenant_status_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(residency_policy__in=Policy.values),
                name="tenant_residency_policy_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"

    @property
    def is_active(self) -> bool:
        return self.status == TenantStatus.ACTIVE

    @property
    def is_deletion_pending(self) -> bool:
        return self.deletion_scheduled_for is not None

    @property
    def is_public(self) -> bool:
        return self.schema_name == settings.PUBLIC_SCHEMA_NAME

    def pause_remaining(self, now) -> float:
        """Seconds left of a move's write pause (0: not paused)."""
        if self.writes_paused_until is None:
            return 0.0
        return max(0.0, (self.writes_paused_until - now).total_seconds())

    @property
    def host(self) -> str:
        return f"{self.slug}.{settings.PORTAL_DOMAIN}"

    @property
    def url(self) -> str:
        port = f":{settings.PORTAL_PORT}" if settings.PORTAL_PORT else ""
        return f"{settings.PORTAL_SCHEME}://{self.host}{port}/"


class Domain(DomainMixin):
    """A host name that routes to a tenant (`acme.localhost`, or the public host)."""

    def __str__(self) -> str:
        return self.domain


class SpareSchema(models.Model):
    """A pre-migrated, empty schema waiting to be claimed (renamed) by provisioning.

    `fingerprint` names the set of tenant migrations it was built with; provisioning only claims
    spares whose fingerprint matches the code's, so a spare never lags behind the migrations.
    """

    schema_name = models.CharField(max_length=63, unique=True)
    fingerprint = models.CharField(max_length=64, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.schema_name


class Shard(models.Model):
    """A PostgreSQL database that holds organizations' schemas (see tenants.shards).

    The shard `default` (DATABASE_URL, DEFAULT_REGION) has no row: it is the database this table
    lives in. `url` should carry no password (use ~/.pgpass or PGPASSFILE): it is shown to staff.
    """

    name = models.CharField(max_length=40, unique=True)
    url = models.TextField()
    region = models.CharField(max_length=32)
    weight = models.PositiveIntegerField(default=100, help_text="Relative capacity.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=models.Q(weight__gt=0), name="shard_weight_positive"),
            models.CheckConstraint(
                condition=~models.Q(name="default"), name="shard_default_has_no_row"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.region})"


class SchemaMigrationState(models.Model):
    """Which migrations a schema on a shard was last brought up to (manage.py migrate_fleet).

    `fingerprint` is tenants.schema_pool.migrations_fingerprint() (or the shared apps' one for a
    shard's `public`) at the time the schema was last migrated: equal to the code's means current,
    so a no-op fleet run reads this table once instead of every schema's django_migrations.
    """

    shard = models.CharField(max_length=40)
    schema_name = models.CharField(max_length=63)
    fingerprint = models.CharField(max_length=64)
    migrated_at = models.DateTimeField()
    error = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["shard", "schema_name"], name="schema_state_unique")
        ]

    def __str__(self) -> str:
        return f"{self.shard}:{self.schema_name}"


class SigningKeyStatus(models.TextChoices):
    ACTIVE = "active", "Active (signs new tokens)"
    PREVIOUS = "previous", "Previous (verifies until its tokens expire)"
    RETIRED = "retired", "Retired"


class SigningKey(models.Model):
    """An RSA key pair that signs the portal's JWTs, named by `kid` (see credentials.keyring).

    Only the active key keeps its private half, and only wrapped (AES-256-GCM under a key that is
    not in the database; docs/adr/0003). A previous key keeps its public half to verify the tokens
    it signed until they expire; a retired key verifies nothing.
    """

    kid = models.CharField(max_length=64, unique=True)
    status = models.CharField(
        max_length=16, choices=SigningKeyStatus.choices, default=SigningKeyStatus.ACTIVE
    )
    public_key_pem = models.TextField()
    private_key_wrapped = models.BinaryField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    rotated_at = models.DateTimeField(null=True, blank=True)
    verify_until = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["status"],
                condition=models.Q(status="active"),
                name="signing_key_one_active",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=SigningKeyStatus.values),
                name="signing_key_status_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(status="active") | models.Q(private_key_wrapped__isnull=True),
                name="signing_key_private_only_when_active",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kid} ({self.status})"


class PlatformConfigDefault(models.Model):
    """A platform-wide config default set by staff: the lowest layer of every organization's
    agent configuration (`agents.defaults`, `agents.<type>`; see agents.configuration)."""

    key = models.CharField(max_length=200, unique=True)
    value = models.JSONField()
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.CharField(max_length=254, blank=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class SupportSession(models.Model):
    """A time-boxed window in which one staff member may read an organization's portal, for a
    stated reason (organizations.support: opened from the admin, ended by the organization's
    owner, the staff member, or the clock). Only `public` holds it."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="support_sessions")
    # Who opened it; kept by email too, so the record outlives the staff account.
    staff = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    staff_email = models.EmailField()
    staff_name = models.CharField(max_length=150, blank=True)
    reason = models.CharField(max_length=500)
    started_at = models.DateTimeField()
    until = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    ended_by = models.CharField(max_length=254, blank=True)

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(until__gt=models.F("started_at")),
                name="support_session_ends_after_start",
            ),
            models.CheckConstraint(
                condition=~models.Q(reason=""), name="support_session_reason_given"
            ),
        ]
        indexes = [models.Index(fields=["tenant", "until"], name="support_session_tenant_until")]

    def __str__(self) -> str:
        return f"{self.staff_email} in {self.tenant_id} until {self.until:%Y-%m-%d %H:%M}"

    @property
    def staff_display(self) -> str:
        return self.staff_name or self.staff_email

    def is_open_at(self, now) -> bool:
        return self.ended_at is None and self.until > now
