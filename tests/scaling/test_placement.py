"""Placement: weighted rendezvous hashing among the shards in the allowed regions."""

from __future__ import annotations

import uuid

import pytest

from tenants.shards import NoShardAvailable, ShardInfo, place

KEYS = [str(uuid.UUID(int=n * 7919 + 1)) for n in range(3000)]


def shard(name: str, region: str = "us-east-1", weight: int = 100) -> ShardInfo:
    return ShardInfo(name=name, region=region, weight=weight, url=f"postgres://h/{name}")


def test_an_organization_lands_only_in_its_allowed_regions():
    shards = [shard("us1"), shard("us2"), shard("eu1", "eu-west-1"), shard("eu2", "eu-west-1")]

    placed = {place(key, {"eu-west-1"}, shards) for key in KEYS[:500]}

    assert placed == {"eu1", "eu2"}


def test_no_shard_in_the_allowed_regions_is_a_clear_refusal():
    with pytest.raises(NoShardAvailable, match="ap-southeast-1"):
        place(KEYS[0], {"ap-southeast-1"}, [shard("us1"), shard("eu1", "eu-west-1")])


def test_placement_is_stable_and_a_new_shard_takes_only_its_share():
    before_shards = [shard("a"), shard("b"), shard("c")]
    after_shards = [*before_shards, shard("d")]

    before = {key: place(key, {"us-east-1"}, before_shards) for key in KEYS}
    again = {key: place(key, {"us-east-1"}, before_shards) for key in KEYS}
    after = {key: place(key, {"us-east-1"}, after_shards) for key in KEYS}

    assert again == before
    moved = [key for key in KEYS if after[key] != before[key]]
    # Every organization that would move goes to the new shard, none between old ones...
    assert {after[key] for key in moved} == {"d"}
    # ...and about 1/N of them would (N = 4 shards).
    assert 0.20 < len(moved) / len(KEYS) < 0.30


def test_weights_set_each_shards_share():
    shards = [shard("small", weight=100), shard("big", weight=300)]

    share = sum(place(key, {"us-east-1"}, shards) == "big" for key in KEYS) / len(KEYS)

    assert 0.70 < share < 0.80
