"""Rebalancing: the planner's moves, region rules, and the command."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from scaling.rebalance import OrganizationLoad, plan_moves, with_loads
from tenants.shards import ShardInfo
from tests.scaling.conftest import SHARD_B, SHARDS

US = frozenset({"us-east-1", "us-west-2"})
EVERYWHERE = frozenset({"us-east-1", "us-west-2", "eu-central-1"})


def shard(name: str, region: str, weight: int = 100) -> ShardInfo:
    return ShardInfo(name=name, region=region, weight=weight, url=f"postgres://h/{name}")


def org(slug: str, shard_name: str, size: int, allowed=EVERYWHERE, usage: int = 0):
    return OrganizationLoad(
        slug=slug,
        shard=shard_name,
        home_region="us-east-1",
        allowed_regions=allowed,
        size_bytes=size,
        usage=usage,
    )


SHARDS_MAP = {
    "default": shard("default", "us-east-1"),
    "us2": shard("us2", "us-west-2"),
    "eu": shard("eu", "eu-central-1"),
}


def test_moves_go_from_the_loaded_shard_to_the_empty_ones_until_balanced():
    orgs = with_loads([org(f"o{n}", "default", 100) for n in range(9)])

    moves = plan_moves(orgs, SHARDS_MAP)

    assert {move.source for move in moves} == {"default"}
    targets = [move.target for move in moves]
    assert (targets.count("us2"), targets.count("eu")) == (3, 3)


def test_an_organization_is_never_proposed_outside_its_regions():
    orgs = with_loads([org(f"o{n}", "default", 100, allowed=US) for n in range(9)])

    moves = plan_moves(orgs, SHARDS_MAP)

    assert moves and {move.target for move in moves} == {"us2"}


def test_recent_usage_counts_as_much_as_size():
    orgs = with_loads(
        [org("quiet", "default", 100), org("busy", "default", 100, usage=1000)]
        + [org(f"o{n}", "us2", 100) for n in range(2)]
    )

    assert [o.slug for o in sorted(orgs, key=lambda o: o.load, reverse=True)][0] == "busy"


def test_a_balanced_fleet_gets_no_moves_and_weights_set_the_shares():
    balanced = with_loads([org("a", "default", 100), org("b", "us2", 100), org("c", "eu", 100)])
    weighted = {**SHARDS_MAP, "eu": shard("eu", "eu-central-1", weight=200)}
    uneven = with_loads([org("a", "default", 100), org("b", "us2", 100)] + [org("c", "eu", 200)])

    assert plan_moves(balanced, SHARDS_MAP) == []
    assert plan_moves(uneven, weighted) == []


@pytest.mark.django_db(databases=SHARDS)
def test_the_command_proposes_moves_to_a_new_shard_without_applying_them(org, other_org, shard_b):
    out = io.StringIO()

    call_command("rebalance", stdout=out)

    text = out.getvalue()
    assert f"{SHARD_B}: load 0.0%" in text
    assert f"-> {SHARD_B}" in text
    assert "run with --apply" in text
    org.tenant.refresh_from_db()
    assert org.tenant.shard == "default"
