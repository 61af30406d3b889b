"""Data residency: which regions an organization's data may live in, and the one placement check.

Each organization has a home region (`Tenant.region`) and a residency policy
(`Tenant.residency_policy`): `eu`, `us` or `global`, naming its allowed regions. Every placement
decision (signup, a change of home region or policy, an export's storage label, a shard or a move)
calls `check_placement`, which refuses anything outside the allowed regions with a
`ResidencyViolation` naming the rule, after the refusal has been recorded in the audit log.

Recording is done by the audit app (above this layer), which registers its recorder at start-up
(`audit.apps`). Call `check_placement` outside the transaction that would write the placement, so
the recorded refusal commits even though the change does not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import models

from core.actors import Actor
from core.errors import Forbidden

if TYPE_CHECKING:
    from tenants.models import Tenant

# The regions of each policy. `global` allows every region the platform offers (settings.REGIONS).
POLICY_REGIONS: dict[str, tuple[str, ...] | None] = {
    "eu": ("eu-west-1", "eu-central-1", "eu-north-1"),
    "us": ("us-east-1", "us-east-2", "us-west-1", "us-west-2"),
    "global": None,
}
DEFAULT_POLICY = "global"


class Policy(models.TextChoices):
    EU = "eu", "EU only (eu-west-1, eu-central-1, eu-north-1)"
    US = "us", "US only (us-east-1, us-east-2, us-west-1, us-west-2)"
    GLOBAL = "global", "Any region"


class Purpose(models.TextChoices):
    """What a placement is for: recorded with a refusal."""

    SIGNUP = "signup", "Signup"
    REGION_CHANGE = "region_change", "Change of home region or policy"
    EXPORT = "export", "Export storage"
    SHARD = "shard", "Shard placement"
    MOVE = "move", "Move to another shard"


class Rule(models.TextChoices):
    """The rule a refusal names (`ResidencyViolation.rule`)."""

    REGION_UNKNOWN = "region_unknown", "The region is not one of the platform's regions"
    POLICY_UNKNOWN = "policy_unknown", "The residency policy does not exist"
    POLICY_REGIONS = "policy_regions", "The region is outside the policy's regions"


class ResidencyViolation(Forbidden):
    """A placement outside an organization's allowed regions (a 403, code
    `residency_violation`). `rule` is a `Rule`; `detail` carries rule, policy, region, purpose and
    the allowed regions."""

    def __init__(self, *, rule: str, message: str, policy: str, region: str, purpose: str) -> None:
        allowed = list(allowed_regions(policy)) if policy in POLICY_REGIONS else []
        super().__init__(
            "residency_violation",
            message,
            detail={
                "rule": rule,
                "policy": policy,
                "region": region,
                "purpose": purpose,
                "allowed_regions": allowed,
            },
        )
        self.rule = rule
        self.policy = policy
        self.region = region
        self.purpose = purpose
        self.allowed = tuple(allowed)


RefusalRecorder = Callable[..., None]
_recorders: list[RefusalRecorder] = []


def register_refusal_recorder(recorder: RefusalRecorder) -> None:
    """Called by the audit app at start-up. `recorder(actor=, tenant=, violation=, subject=)`
    records a refusal; `tenant` is None when there is no organization yet (signup)."""
    if recorder not in _recorders:
        _recorders.append(recorder)


def allowed_regions(policy: str) -> tuple[str, ...]:
    """The regions `policy` allows, in the platform's order (KeyError: no such policy)."""
    regions = POLICY_REGIONS[policy]
    offered = tuple(settings.REGIONS)
    if regions is None:
        return offered
    return tuple(region for region in offered if region in regions)


def organization_regions(tenant: Tenant) -> tuple[str, ...]:
    """The regions the organization's policy allows."""
    return allowed_regions(tenant.residency_policy)


def violation(*, policy: str, region: str, purpose: str) -> ResidencyViolation | None:
    """The refusal a placement of `region` under `policy` would get, or None if it is allowed.

    Pure: records nothing. Use `check_placement` for decisions; this is for showing choices.
    """
    if policy not in POLICY_REGIONS:
        return ResidencyViolation(
            rule=Rule.POLICY_UNKNOWN,
            message=f"Unknown residency policy “{policy}”. Known: {', '.join(POLICY_REGIONS)}.",
            policy=policy,
            region=region,
            purpose=purpose,
        )
    if region not in settings.REGIONS:
        return ResidencyViolation(
            rule=Rule.REGION_UNKNOWN,
            message=f"Unknown region “{region}”. Known: {', '.join(settings.REGIONS)}.",
            policy=policy,
            region=region,
            purpose=purpose,
        )
    allowed = allowed_regions(policy)
    if region not in allowed:
        return ResidencyViolation(
            rule=Rule.POLICY_REGIONS,
            message=(
                f"Refused by the residency policy “{policy}”: data may live only in "
                f"{', '.join(allowed)}, not in {region}."
            ),
            policy=policy,
            region=region,
            purpose=purpose,
        )
    return None


def check_placement(
    *,
    actor: Actor,
    region: str,
    purpose: str,
    tenant: Tenant | None = None,
    policy: str | None = None,
    subject: str = "",
) -> None:
    """Allow placing data in `region`, or record the refusal and raise ResidencyViolation.

    The policy is `policy` when given (signup, a policy change), else the organization's.
    `subject` names what is being placed (a shard's name, an export's label) for the record.
    """
    if policy is None:
        if tenant is None:
            raise ValueError("check_placement needs a tenant or a policy")
        policy = tenant.residency_policy
    refusal = violation(policy=policy, region=region, purpose=purpose)
    if refusal is None:
        return
    for recorder in _recorders:
        recorder(actor=actor, tenant=tenant, violation=refusal, subject=subject)
    raise refusal


def refusal_details(violation: ResidencyViolation, subject: str = "") -> dict[str, Any]:
    """What a recorder writes: the rule and its terms (never anything secret)."""
    details = dict(violation.detail or {})
    if subject:
        details["subject"] = subject
    return details
