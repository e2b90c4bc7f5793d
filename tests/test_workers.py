"""``run_workers``: N spawned processes, one shard each, merged equal to one process."""

from __future__ import annotations

from typing import Any

import pytest

from harness.errors import HarnessInputError
from harness.shard import Shard, shard_indices
from harness.workers import WorkerError, run_workers
from tests.support.equality import assert_same_results
from tests.support.synthetic import record_devices

FLEET = 400


def run_synthetic_shard(index: int, count: int) -> dict[str, Any]:
    return record_devices(shard_indices(FLEET, Shard(index, count))).to_dict()


def reject_shard_two(index: int, count: int) -> dict[str, Any]:
    if index == 2:
        raise HarnessInputError("fleet", "cohort 'x' has no devices", "fleets/x.toml:3")
    return run_synthetic_shard(index, count)


def crash_shard_one(index: int, count: int) -> dict[str, Any]:
    if index == 1:
        raise RuntimeError("boom")
    return run_synthetic_shard(index, count)


def test_three_workers_merge_to_the_single_process_result() -> None:
    merged = run_workers(3, run_synthetic_shard)
    assert_same_results(merged, record_devices(range(FLEET)))


def test_one_worker_runs_in_process() -> None:
    assert_same_results(run_workers(1, run_synthetic_shard), record_devices(range(FLEET)))


def test_bad_input_in_a_worker_is_raised_unchanged() -> None:
    with pytest.raises(HarnessInputError) as err:
        run_workers(3, reject_shard_two)
    assert str(err.value) == "fleets/x.toml:3: fleet: cohort 'x' has no devices"


def test_other_failures_name_the_worker() -> None:
    with pytest.raises(WorkerError, match="worker 1/2 failed: RuntimeError: boom"):
        run_workers(2, crash_shard_one)
    with pytest.raises(HarnessInputError, match="--workers"):
        run_workers(0, run_synthetic_shard)
