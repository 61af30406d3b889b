"""Every write to organizations: provisioning, suspension, reactivation and deletion."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from accounts import services as account_services
from accounts.models import User
from audit import services as audit
from core.actors import Actor
from core.roles import Role
from tenants import context, events, routing, schema_pool
from tenants.models import Domain, Plan, Tenant, TenantStatus
from tenants.validators import schema_name_for, validate_region, validate_slug

logger = logging.getLogger(__name__)

DUPLICATE_SCHEMA = "42P06"


def validate_new_tenant(
    *, slug: str, name: str, owner_email: str, owner_password: str, region: str, plan_slug: str
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
) -> Tenant:
    """Create an organization, its schema, its domain and its owner, ready to use at once.

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
    )
    schema_name = schema_name_for(slug)

    def create_rows() -> Tenant:
        tenant = Tenant.objects.create(
            schema_name=schema_name, slug=slug, name=name.strip(), plan=plan, region=region
        )
        Domain.objects.create(domain=tenant.host, tenant=tenant, is_primary=True)
        details = {"slug": slug, "plan": plan.slug, "region": region}
        with context.tenant_context(tenant):
            owner = account_services.user_create(
                actor=actor, email=owner_email, password=owner_password, role=Role.OWNER
            )
            audit.record(
                actor=actor,
                action="organization.created",
                resource_type="organization",
                resource_id=str(tenant.public_id),
                details={**details, "owner": owner.email},
            )
        audit.record(
            actor=actor,
            action="organization.created",
            resource_type="organization",
            resource_id=str(tenant.public_id),
            details=details,
        )
        return tenant

    tenant = None
    with _slug_races_reported(), context.public_context():
        # Fast path: the claim (a rename) and the rows commit together or not at all; a
        # failure puts the spare back in the pool untouched.
        with transaction.atomic():
            if schema_pool.claim(schema_name):
                tenant = create_rows()
                transaction.on_commit(schema_pool.refill_in_background)
        if tenant is None:
            # Slow path: migrations run outside the rows' transaction; a failure drops the schema.
            schema_pool.build_schema(schema_name)
            try:
                with transaction.atomic():
                    tenant = create_rows()
            except BaseException:
                schema_pool.drop_schema(schema_name)
                raise
    logger.info("provisioned organization %s (%s)", slug, schema_name)
    return tenant


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
    """Delete an organization: its schema and every row in it, its domains, then the tenant row.

    One transaction (PostgreSQL's DDL is transactional): it either all happens or none of it.
    Routing caches in every process are invalidated after commit, so the host stops answering.
    """
    audit.require_staff(actor, "organization.deleted", "organization", str(tenant.public_id))
    with context.public_context(), transaction.atomic():
        tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
        public_id, slug, schema_name = str(tenant.public_id), tenant.slug, tenant.schema_name
        schema_pool.drop_schema(schema_name)
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
