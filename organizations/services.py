"""Every write to organizations: provisioning, suspension, reactivation and deletion."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from accounts import services as account_services
from accounts.models import User
from agents import selectors as agent_selectors
from audit import services as audit
from billing import invoicing
from core.actors import Actor
from core.errors import field_error
from core.roles import ORGANIZATION_DELETE, ORGANIZATION_EXPORT, ORGANIZATION_SECURITY, Role
from organizations import exports
from tenants import context, events, migration_state, residency, routing, schema_pool, shards
from tenants.models import Domain, Plan, Tenant, TenantStatus
from tenants.validators import schema_name_for, validate_region, validate_slug
from vault import keystore

logger = logging.getLogger(__name__)

DUPLICATE_SCHEMA = "42P06"


def validate_new_tenant(
    *,
    slug: str,
    name: str,
    owner_email: str,
    owner_password: str,
    region: str,
    plan_slug: str,
    residency_policy: str = residency.DEFAULT_POLICY,
) -> Plan:
    """Check everything before anything is written; raises ValidationError keyed by field."""
    errors: dict[str, list[ValidationError]] = {}

    def check(field: str, validator, *args) -> None:
        try:
            validator(*args)
        except ValidationError as error:
            errors.setdefault(field, []).extend(error.error_list)

    check("slug", validate_slug, slug)
    if "slug" not in errors:
        with context.public_context():
            taken = (
                Tenant.objects.filter(slug=slug).exists()
                or Domain.objects.filter(domain=f"{slug}.{settings.PORTAL_DOMAIN}").exists()
            )
        if taken:
            errors["slug"] = [ValidationError("That name is taken.", code="slug_taken")]
    if not name.strip():
        errors["name"] = [ValidationError("Enter the organization's name.", code="required")]
    elif len(name) > 120:
        errors["name"] = [ValidationError("At most 120 characters.", code="max_length")]
    check("region", validate_region, region)
    if residency_policy not in residency.Policy.values:
        known = ", ".join(residency.Policy.values)
        errors["residency_policy"] = [
            ValidationError(
                f"Unknown residency policy “{residency_policy}”. Known: {known}.",
                code="invalid_residency_policy",
            )
        ]
    check("owner_email", validate_email, owner_email)
    check(
        "owner_password",
        validate_password,
        owner_password,
        User(email=owner_email, full_name=name),
    )
    plan = None
    with context.public_context():
        plan = Plan.objects.filter(slug=plan_slug).first()
    if plan is None:
        errors["plan"] = [ValidationError(f"Unknown plan “{plan_slug}”.", code="invalid_plan")]
    if errors:
        raise ValidationError(errors)
    return plan


def provision_tenant(
    *,
    actor: Actor,
    slug: str,
    name: str,
    owner_email: str,
    owner_password: str,
    region: str = "",
    plan_slug: str = "free",
    residency_policy: str = residency.DEFAULT_POLICY,
    owner_full_name: str = "",
) -> Tenant:
    """Create an organization, its schema, its domain and its owner, ready to use at once.

    The home region must be one the residency policy allows (tenants.residency.check_placement:
    a refusal is recorded and raised as ResidencyViolation before anything is written).

    All or nothing: a spare schema from the pool is claimed in the same transaction that writes
    the tenant row, the domain and the owner; with no spare, the schema is built first and
    dropped again if writing the rows fails. Nothing is left behind either way.
    """
    slug = slug.strip().lower()
    owner_email = owner_email.strip().lower()
    region = region or settings.DEFAULT_REGION
    plan = validate_new_tenant(
        slug=slug,
        name=name,
        owner_email=owner_email,
        owner_password=owner_password,
        region=region,
        plan_slug=plan_slug,
        residency_policy=residency_policy,
    )
    residency.check_placement(
        actor=actor,
        region=region,
        policy=residency_policy,
        purpose=residency.Purpose.SIGNUP,
        subject=slug,
    )
    schema_name = schema_name_for(slug)
    tenant = Tenant(
        schema_name=schema_name,
        slug=slug,
        name=name.strip(),
        plan=plan,
        region=region,
        residency_policy=residency_policy,
    )
    # Placement: a shard in the regions its residency policy allows, its home region first.
    tenant.shard = shards.place_tenant(actor=actor, tenant=tenant)

    def write(tenant: Tenant) -> None:
        """The owner and the organization's first event on its shard, then the directory rows.

        On `default` both are one transaction. On another shard the directory's commits first,
        inside the shard's: a failure before that rolls both back, and a failed shard commit
        afterwards is undone by `_undo_directory_rows`.
        """
        details = {
            "slug": slug,
            "plan": plan.slug,
            "region": region,
            "residency_policy": residency_policy,
            "shard": tenant.shard,
        }
        with context.tenant_context(tenant):
            owner = account_services.user_create(
                actor=actor,
                email=owner_email,
                password=owner_password,
                role=Role.OWNER,
                full_name=" ".join(owner_full_name.split())[:150],
            )
            audit.record(
                actor=actor,
                action="organization.created",
                resource_type="organization",
                resource_id=str(tenant.public_id),
                details={**details, "owner": owner.email},
            )
        with context.public_context(), transaction.atomic():
            tenant.save()
            Domain.objects.create(domain=tenant.host, tenant=tenant, is_primary=True)
            # The plan from the first moment: invoices prorate the fee across later changes.
            invoicing.plan_change_record(
                tenant=tenant, plan=plan, changed_by=actor.label, at=tenant.created_at
            )
            # A claimed spare and a freshly built schema both have the code's migrations.
            migration_state.record(
                shard=tenant.shard,
                schema_name=schema_name,
                fingerprint=schema_pool.migrations_fingerprint(),
            )
            audit.record(
                actor=actor,
                action="organization.created",
                resource_type="organization",
                resource_id=str(tenant.public_id),
                details=details,
            )

    shard = tenant.shard
    with _slug_races_reported(), _undo_directory_rows(tenant), context.public_context(shard=shard):
        # Fast path: the claim (a rename) and the rows commit together or not at all; a
        # failure puts the spare back in the pool untouched.
        claimed = False
        with transaction.atomic():
            if schema_pool.claim(schema_name, shard=shard):
                claimed = True
                write(tenant)
                transaction.on_commit(lambda: schema_pool.refill_in_background(shard))
        if not claimed:
            # Slow path: migrations run outside the rows' transaction; a failure drops the schema.
            schema_pool.build_schema(schema_name, shard=shard)
            try:
                with transaction.atomic():
                    write(tenant)
            except BaseException:
                schema_pool.drop_schema(schema_name, shard=shard)
                raise
    logger.info("provisioned organization %s (%s on %s)", slug, schema_name, tenant.shard)
    return tenant


@contextmanager
def _undo_directory_rows(tenant: Tenant) -> Iterator[None]:
    """When the shard's side fails after the directory's rows committed (another shard than
    `default`), remove those rows again: nothing must route to a schema that does not exist."""
    try:
        yield
    except BaseException:
        if tenant.pk is not None and tenant.shard != shards.DEFAULT:
            with context.public_context(), transaction.atomic():
                Domain.objects.filter(tenant_id=tenant.pk).delete()
                Tenant.objects.filter(pk=tenant.pk).delete()
            tenant.pk = None
        raise


@contextmanager
def _slug_races_reported() -> Iterator[None]:
    """A concurrent signup that took the slug first (its schema, or its row) is a plain 'taken'."""
    try:
        yield
    except IntegrityError as error:
        raise ValidationError({"slug": ["That name is taken."]}) from error
    except DatabaseError as error:
        if getattr(error.__cause__, "sqlstate", None) == DUPLICATE_SCHEMA:
            raise ValidationError({"slug": ["That name is taken."]}) from error
        raise


SUSPENSION_REASON_MAX_LENGTH = 500


def _set_status(
    *, actor: Actor, tenant: Tenant, status: str, action: str, reason: str = ""
) -> Tenant:
    audit.require_staff(actor, action, "organization", str(tenant.public_id))
    with context.public_context(), transaction.atomic():
        tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
        if tenant.status == status:
            return tenant
        tenant.status = status
        tenant.suspended_at = timezone.now() if status == TenantStatus.SUSPENDED else None
        tenant.save(update_fields=["status", "suspended_at"])
        audit.record_in_both_logs(
            actor=actor,
            tenant=tenant,
            action=action,
            resource_type="organization",
            resource_id=str(tenant.public_id),
            details={"slug": tenant.slug, **({"reason": reason} if reason else {})},
        )
        routing.clear_on_commit()
        # Open sockets re-check at once: a suspended organization's close (gateway.consumers).
        events.recheck_on_commit(tenant, action)
    return tenant


def tenant_suspend(*, actor: Actor, tenant: Tenant, reason: str) -> Tenant:
    """Suspend an organization: its users and API clients are refused at their next request.

    `reason` is mandatory (staff say why; it is in the platform's and the organization's log).
    """
    reason = " ".join(str(reason or "").split())
    if not reason:
        raise ValidationError({"reason": ["Say why the organization is suspended."]})
    if len(reason) > SUSPENSION_REASON_MAX_LENGTH:
        raise ValidationError({"reason": [f"At most {SUSPENSION_REASON_MAX_LENGTH} characters."]})
    return _set_status(
        actor=actor,
        tenant=tenant,
        status=TenantStatus.SUSPENDED,
        action="organization.suspended",
        reason=reason,
    )


def tenant_reactivate(*, actor: Actor, tenant: Tenant) -> Tenant:
    return _set_status(
        actor=actor, tenant=tenant, status=TenantStatus.ACTIVE, action="organization.reactivated"
    )


def tenant_delete(*, actor: Actor, tenant: Tenant) -> None:
    """Delete an organization: its data keys first (crypto-shredding), then its schema and every
    row in it, its domains, then the tenant row.

    The keys go first and on their own: whatever happens next, every encrypted value of the
    organization, in the database or in any earlier dump of it, is unreadable from then on. The
    rest is one transaction (PostgreSQL's DDL is transactional): all of it happens or none.
    Routing caches in every process are invalidated after commit, so the host stops answering.
    """
    audit.require_staff(actor, "organization.deleted", "organization", str(tenant.public_id))
    keystore.store().destroy(owner=str(tenant.public_id))
    with context.public_context(), transaction.atomic():
        audit.record(
            actor=actor,
            action="organization.keys_destroyed",
            resource_type="organization",
            resource_id=str(tenant.public_id),
            details={"slug": tenant.slug},
        )
    with context.public_context(), transaction.atomic():
        tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
        public_id, slug, schema_name = str(tenant.public_id), tenant.slug, tenant.schema_name
        # On another shard the drop commits on its own: the directory's rows go just after.
        schema_pool.drop_schema(schema_name, shard=tenant.shard)
        migration_state.forget(shard=tenant.shard, schema_name=schema_name)
        Domain.objects.filter(tenant=tenant).delete()
        Tenant.objects.filter(pk=tenant.pk).delete()
        audit.record(
            actor=actor,
            action="organization.deleted",
            resource_type="organization",
            resource_id=public_id,
            details={"slug": slug, "schema": schema_name},
        )
        routing.clear_on_commit()
        events.recheck_on_commit(tenant, "organization.deleted")  # its open sockets close


# --- Two-phase deletion --------------------------------------------------------------------------


def organization_deletion_request(*, actor: Actor, tenant: Tenant, confirm_slug: str) -> Tenant:
    """The owner asks for the organization's deletion, typing its slug to confirm.

    The organization is suspended at once (users, API clients and sockets are refused), except
    that its owner may still sign in to download the export; staff may cancel until
    `deletion_scheduled_for` (now + DELETION_GRACE_DAYS), when `purge_organizations` deletes it.
    Recorded in both logs.
    """
    action = "organization.deletion_requested"
    audit.require(
        actor,
        ORGANIZATION_DELETE,
        action=action,
        resource_type="organization",
        resource_id=str(tenant.public_id),
    )
    if not isinstance(confirm_slug, str) or confirm_slug.strip().lower() != tenant.slug:
        raise field_error(
            "confirm_slug",
            f"Type “{tenant.slug}”, the organization's address, to confirm.",
            "confirmation_mismatch",
        )
    with context.public_context(), transaction.atomic():
        current = Tenant.objects.select_for_update().get(pk=tenant.pk)
        if current.is_deletion_pending:
            return current
        now = timezone.now()
        scheduled = now + timedelta(days=settings.DELETION_GRACE_DAYS)
        _deletion_state_save(
            actor,
            current,
            action,
            status=TenantStatus.SUSPENDED,
            requested=(now, actor.label, scheduled),
            details={"slug": current.slug, "scheduled_for": scheduled.isoformat()},
        )
        events.recheck_on_commit(current, action)
    return current


def organization_deletion_cancel(*, actor: Actor, tenant: Tenant) -> Tenant:
    """Staff cancel a pending deletion: the organization is active again, nothing was lost."""
    action = "organization.deletion_cancelled"
    audit.require_staff(actor, action, "organization", str(tenant.public_id))
    with context.public_context(), transaction.atomic():
        current = Tenant.objects.select_for_update().get(pk=tenant.pk)
        if not current.is_deletion_pending:
            return current
        scheduled = current.deletion_scheduled_for
        _deletion_state_save(
            actor,
            current,
            action,
            status=TenantStatus.ACTIVE,
            requested=(None, "", None),
            details={"slug": current.slug, "was_scheduled_for": scheduled.isoformat()},
        )
    return current


def _deletion_state_save(
    actor: Actor,
    tenant: Tenant,
    action: str,
    *,
    status: str,
    requested: tuple[datetime | None, str, datetime | None],
    details: dict[str, object],
) -> None:
    """Save a deletion request's state (when, by whom, scheduled for; all empty when cancelled)
    with the status, in both logs, and drop every process's routing cache after commit."""
    when, by, scheduled = requested
    tenant.status = status
    tenant.suspended_at = when
    tenant.deletion_requested_at, tenant.deletion_requested_by = when, by
    tenant.deletion_scheduled_for = scheduled
    tenant.save(
        update_fields=[
            "status",
            "suspended_at",
            "deletion_requested_at",
            "deletion_requested_by",
            "deletion_scheduled_for",
        ]
    )
    audit.record_in_both_logs(
        actor=actor,
        tenant=tenant,
        action=action,
        resource_type="organization",
        resource_id=str(tenant.public_id),
        details=details,
    )
    transaction.on_commit(routing.clear_everywhere)


def organization_export(*, actor: Actor, tenant: Tenant) -> Iterator[str]:
    """The organization's full export (JSON, secrets excluded) for its owner, recorded first.

    The archive's storage region (EXPORT_REGION, default the home region) is a placement: the
    residency policy must allow it (refused and recorded otherwise). Run in the organization's
    context; the returned pieces are read there too.
    """
    action = "organization.exported"
    audit.require(
        actor,
        ORGANIZATION_EXPORT,
        action=action,
        resource_type="organization",
        resource_id=str(tenant.public_id),
    )
    region = settings.EXPORT_REGION or tenant.region
    residency.check_placement(
        actor=actor,
        tenant=tenant,
        region=region,
        purpose=residency.Purpose.EXPORT,
        subject="organization export",
    )
    with transaction.atomic():
        audit.record(
            actor=actor,
            action=action,
            resource_type="organization",
            resource_id=str(tenant.public_id),
            details={"storage_region": region, "tables": exports.tables()},
        )
    return exports.export_chunks(region=region)


def organizations_purge_due(*, actor: Actor) -> list[str]:
    """Delete every organization whose deletion grace period is over (staff or the system);
    returns their slugs. Each is crypto-shredded first (tenant_delete)."""
    audit.require_staff(actor, "organization.deleted", "organization")
    with context.public_context():
        due = list(
            Tenant.objects.filter(
                deletion_scheduled_for__isnull=False, deletion_scheduled_for__lte=timezone.now()
            ).order_by("deletion_scheduled_for")
        )
    for tenant in due:
        tenant_delete(actor=actor, tenant=tenant)
    return [tenant.slug for tenant in due]


def tenant_update(*, actor: Actor, tenant: Tenant, name: str, plan: Plan) -> Tenant:
    """Rename an organization or change its plan (staff). Both logs record the change."""
    audit.require_staff(actor, "organization.updated", "organization", str(tenant.public_id))
    if not name.strip():
        raise ValidationError({"name": ["Enter the organization's name."]})
    with context.public_context(), transaction.atomic():
        current = Tenant.objects.select_for_update().select_related("plan").get(pk=tenant.pk)
        changes = {}
        if current.name != name.strip():
            changes["name"] = {"from": current.name, "to": name.strip()}
        if current.plan_id != plan.pk:
            changes["plan"] = {"from": current.plan.slug, "to": plan.slug}
        if not changes:
            return current
        current.name = name.strip()
        current.plan = plan
        current.save(update_fields=["name", "plan"])
        if "plan" in changes:
            invoicing.plan_change_record(tenant=current, plan=plan, changed_by=actor.label)
        audit.record_in_both_logs(
            actor=actor,
            tenant=current,
            action="organization.updated",
            resource_type="organization",
            resource_id=str(current.public_id),
            details=changes,
        )
        routing.clear_on_commit()
    return current


def tenant_residency_set(
    *, actor: Actor, tenant: Tenant, region: str, residency_policy: str
) -> Tenant:
    """Change an organization's home region or residency policy (staff).

    The new home region must be one the new policy allows (tenants.residency.check_placement,
    which records a refusal). Moving data that already lives elsewhere is the shards' business;
    this changes where new placements may go. Both logs record the change.
    """
    action = "organization.residency_changed"
    audit.require_staff(actor, action, "organization", str(tenant.public_id))
    residency.check_placement(
        actor=actor,
        tenant=tenant,
        region=region,
        policy=residency_policy,
        purpose=residency.Purpose.REGION_CHANGE,
    )
    with context.public_context(), transaction.atomic():
        current = Tenant.objects.select_for_update().get(pk=tenant.pk)
        changes = {}
        if current.region != region:
            changes["region"] = {"from": current.region, "to": region}
        if current.residency_policy != residency_policy:
            changes["residency_policy"] = {"from": current.residency_policy, "to": residency_policy}
        if not changes:
            return current
        current.region = region
        current.residency_policy = residency_policy
        current.save(update_fields=["region", "residency_policy"])
        audit.record_in_both_logs(
            actor=actor,
            tenant=current,
            action=action,
            resource_type="organization",
            resource_id=str(current.public_id),
            details=changes,
        )
        transaction.on_commit(routing.clear_everywhere)
    return current


def plan_save(*, actor: Actor, plan: Plan, fields: list[str]) -> Plan:
    """Create or change a plan (staff); recorded in the platform's log."""
    audit.require_staff(actor, "plan.updated", "plan", plan.slug)
    with context.public_context(), transaction.atomic():
        is_new = plan.pk is None
        plan.full_clean()
        plan.save()
        audit.record(
            actor=actor,
            action="plan.created" if is_new else "plan.updated",
            resource_type="plan",
            resource_id=plan.slug,
            details={field: str(getattr(plan, field)) for field in fields},
        )
        # Tenants cache their plan with the routing entry: refresh them everywhere.
        routing.clear_on_commit()
    return plan


def plan_change(*, actor: Actor, plan_slug: str) -> Tenant:
    """The owner moves the current organization to another public plan.

    A downgrade that what the organization uses now would exceed is refused, naming each limit
    (staff overrides still apply on the new plan). Recorded in both logs; the invoice prorates the
    plan fee from this moment.
    """
    tenant = context.require_tenant()
    audit.require(
        actor, "billing:manage", action="organization.plan_changed", resource_type="organization"
    )
    with context.public_context():
        plan = Plan.objects.filter(slug=plan_slug, is_public=True).first()
    if plan is None:
        raise ValidationError({"plan": [f"Unknown plan “{plan_slug}”."]})
    with transaction.atomic():
        with context.public_context():
            current = Tenant.objects.select_for_update().select_related("plan").get(pk=tenant.pk)
        if current.plan_id == plan.pk:
            raise ValidationError({"plan": [f"{tenant.name} is on the {plan.name} plan already."]})
        pool = agent_selectors.pool_get(actor=Actor.system("plan_change"))
        problems = []
        for name, label, used in (
            ("max_agents", "agents", pool.agents),
            ("max_instances", "running instances", pool.instances),
            ("max_cpu_millicores", "CPU (millicores)", pool.cpu_millicores),
            ("max_memory_mb", "memory (MB)", pool.memory_mb),
            ("messages_per_month", "messages this month", pool.messages_this_month),
        ):
            override = getattr(current, f"{name}_override", None)
            limit = override if override is not None else getattr(plan, name)
            if used > limit:
                problems.append(f"{label}: {used:,} in use, the {plan.name} plan allows {limit:,}")
        if problems:
            refusal = ValidationError({"plan": problems}, code="downgrade_exceeds_usage")
        else:
            refusal = None
    if refusal is not None:
        audit.record(
            actor=actor,
            action="organization.plan_changed",
            resource_type="organization",
            resource_id=str(tenant.public_id),
            result="denied",
            details={"reason": "; ".join(problems)[:500], "plan": plan.slug},
        )
        raise refusal
    with transaction.atomic():
        with context.public_context():
            current = Tenant.objects.select_for_update().select_related("plan").get(pk=tenant.pk)
        changes = {"plan": {"from": current.plan.slug, "to": plan.slug}}
        with context.public_context():
            current.plan = plan
            current.save(update_fields=["plan"])
        invoicing.plan_change_record(tenant=current, plan=plan, changed_by=actor.label)
        audit.record_in_both_logs(
            actor=actor,
            tenant=current,
            action="organization.plan_changed",
            resource_type="organization",
            resource_id=str(current.public_id),
            details=changes,
        )
        transaction.on_commit(routing.clear_everywhere)
    return current


def two_factor_requirement_set(*, actor: Actor, required: bool) -> Tenant:
    """The owner requires two-factor authentication of every member of the current organization,
    or stops requiring it. Members without it are sent to set it up at their next request
    (accounts.middleware); API keys and JWTs are not concerned. An owner turns it on only with
    two-factor authentication of their own."""
    tenant = context.require_tenant()
    action = "organization.two_factor_requirement_changed"
    audit.require(
        actor,
        ORGANIZATION_SECURITY,
        action=action,
        resource_type="organization",
        resource_id=str(tenant.public_id),
    )
    if required and not User.objects.filter(pk=actor.id or None, two_factor_enabled=True).exists():
        raise ValidationError(
            "Set up two-factor authentication for yourself first (on your profile).",
            code="two_factor_needed",
        )
    with transaction.atomic():
        with context.public_context():
            current = Tenant.objects.select_for_update().get(pk=tenant.pk)
            if current.require_two_factor == required:
                return current
            current.require_two_factor = required
            current.save(update_fields=["require_two_factor"])
        audit.emit(
            actor=actor,
            action=action,
            resource_type="organization",
            resource_id=str(current.public_id),
            details={
                "required": required,
                "members_without": User.objects.filter(
                    is_active=True, two_factor_enabled=False
                ).count(),
            },
        )
        routing.clear_on_commit()
    return current
