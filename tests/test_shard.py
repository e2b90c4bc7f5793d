"""Shards partition a fleet: union = fleet, no overlap, the same slice every time."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.errors import HarnessInputError
from harness.shard import Shard, shard_indices


@given(size=st.integers(0, 5000), count=st.integers(1, 64))
def test_shards_partition_the_fleet(size: int, count: int) -> None:
    slices = [list(shard_indices(size, Shard(i, count))) for i in range(count)]
    union = sorted(i for s in slices for i in s)
    assert union == list(range(size))  # every device once: union is the fleet, no overlap
    assert max(len(s) for s in slices) - min(len(s) for s in slices) <= 1  # balanced
    again = [list(shard_indices(size, Shard(i, count))) for i in range(count)]
    assert again == slices  # deterministic


def test_every_shard_gets_every_cohort_in_proportion() -> None:
    # Four contiguous cohorts of 250 in 1000 devices: striding gives each shard 62 or 63 of each.
    for i in range(4):
        cohorts = [j // 250 for j in shard_indices(1000, Shard(i, 4))]
        assert {cohorts.count(c) for c in range(4)} <= {62, 63}
        assert len(cohorts) == 250


def test_shards_of_a_real_fleet_have_disjoint_device_ids() -> None:
    from harness.fleet import model
    from harness.shard import shard_devices

    cohorts = (
        model.Cohort("mac", 300, id_style="mac-upper", offset=0),
        model.Cohort("teddy", 200, id_style="prefixed", prefix="Teddy-ESP32-", offset=300),
        model.Cohort("mixed", 100, id_style="mixed-case", offset=500),
    )
    fleet = model.Fleet("t", 7, cohorts, (model.ChildProfile("child-1"),))
    per_shard = [{d.normalized_id for d in shard_devices(fleet, Shard(i, 3))} for i in range(3)]
    whole = {d.normalized_id for d in fleet.devices()}
    assert len(whole) == 600
    assert set().union(*per_shard) == whole
    assert sum(len(s) for s in per_shard) == 600  # no ID on two shards


@pytest.mark.parametrize(
    ("text", "expected"), [("0/1", Shard(0, 1)), ("3/4", Shard(3, 4)), (" 1 / 2 ", Shard(1, 2))]
)
def test_parse(text: str, expected: Shard) -> None:
    assert Shard.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [("4/4", "outside 0..3"), ("1/0", ">= 1"), ("a/4", "expected I/N"), ("-1/4", "expected I/N")],
)
def test_parse_rejects_with_one_clear_line(text: str, why: str) -> None:
    with pytest.raises(HarnessInputError, match=re.escape(why)) as err:
        Shard.parse(text)
    assert "\n" not in str(err.value)


def test_kubernetes_indexed_job_environment() -> None:
    env = {"JOB_COMPLETION_INDEX": "2", "JOB_COMPLETIONS": "5"}
    assert Shard.from_env(env) == Shard(2, 5)
    assert Shard.from_env({}) is None
    assert Shard.resolve(None, env) == Shard(2, 5)
    assert Shard.resolve("1/3", env) == Shard(1, 3)  # the option wins over the environment
    assert Shard.resolve(None, {}) == Shard(0, 1)
    with pytest.raises(HarnessInputError, match="JOB_COMPLETIONS: not set"):
        Shard.from_env({"JOB_COMPLETION_INDEX": "0"})
    with pytest.raises(HarnessInputError, match="JOB_COMPLETION_INDEX: must be"):
        Shard.from_env({"JOB_COMPLETION_INDEX": "x", "JOB_COMPLETIONS": "2"})
    with pytest.raises(HarnessInputError, match=r"outside 0\.\.4"):
        Shard.from_env({"JOB_COMPLETION_INDEX": "5", "JOB_COMPLETIONS": "5"})


def test_label_and_share() -> None:
    assert Shard(1, 4).label == "1-of-4"
    assert Shard(1, 4).share(1000.0) == 250.0
