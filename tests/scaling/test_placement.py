"""Placement: weighted rendezvous hashing among the shards in the allowed regions."""

from __future__ import annotations

import uuid

import pytest

from tenants.shards import NoShardAvailable, ShardInfo, place

US = "us-east-1"
KEYS = [str(uuid.UUID(int=n * 7919 + 1)) for n in range(3000)]


def shard(name: str, region: str = "us-east-1", weight: int = 100) -> ShardInfo:
    return ShardInfo(name=name, region=region, weight=weight, url=f"postgres://h/{name}")


def test_an_organization_lands_only_in_its_allowed_regions():
    shards = [shard("us1"), shard("us2"), shard("eu1", "eu-west-1"), shard("eu2", "eu-west-1")]

    placed = {
        place(key, home_region="eu-west-1", allowed_regions={"eu-west-1"}, shards=shards)
        for key in KEYS[:500]
    }

    assert placed == {"eu1", "eu2"}


def test_the_home_region_comes_first_then_the_other_allowed_regions():
    shards = [shard("us1"), shard("fra", "eu-central-1"), shard("dub", "eu-west-1")]
    eu = {"eu-west-1", "eu-central-1"}

    at_home = {place(k, home_region="eu-west-1", allowed_regions=eu, shards=shards) for k in KEYS}
    elsewhere = {
        place(k, home_region="eu-north-1", allowed_regions=eu, shards=shards) for k in KEYS
    }

    assert at_home == {"dub"}
    assert elsewhere == {"fra", "dub"}


def test_no_shard_in_the_allowed_regions_is_a_clear_refusal():
    with pytest.raises(NoShardAvailable, match="ap-southeast-1"):
        place(
            KEYS[0],
            home_region="ap-southeast-1",
            allowed_regions={"ap-southeast-1"},
            shards=[shard("us1"), shard("eu1", "eu-west-1")],
        )


def test_placement_is_stable_and_a_new_shard_takes_only_its_share():
    before_shards = [shard("a"), shard("b"), shard("c")]
    after_shards = [*before_shards, shard("d")]

    def placed(shards):
        return {
            key: place(key, home_region=US, allowed_regions={US}, shards=shards) for key in KEYS
        }

    before, again, after = placed(before_shards), placed(before_shards), placed(after_shards)

    assert again == before
    moved = [key for key in KEYS if after[key] != before[key]]
    # Every organization that would move goes to the new shard, none between old ones...
    assert {after[key] for key in moved} == {"d"}
    # ...and about 1/N of them would (N = 4 shards).
    assert 0.20 < len(moved) / len(KEYS) < 0.30


def test_weights_set_each_shards_share():
    shards = [shard("small", weight=100), shard("big", weight=300)]

    share = sum(
        place(key, home_region=US, allowed_regions={US}, shards=shards) == "big" for key in KEYS
    ) / len(KEYS)

    assert 0.70 < share < 0.80
