"""A whole rollout over a larger fleet through the real adapters. CI runs a small fleet;
``make bench`` runs the large ones (bench/run.py) and writes the figures to docs/benchmarks.md."""

from __future__ import annotations

import os
from typing import Any

import pytest

from bench.harness import expected_batches, run_rollout
from rollout.model import Phase
from rollout.policy import RolloutPolicy
from tests.fixtures.emulator import EMULATOR_TOKEN

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCALE_INSTANCES = int(os.environ.get("SCALE_INSTANCES", "40"))


def test_a_fleet_rolls_out_in_few_calls_and_each_instance_is_upgraded_once(
    arm_emulator: Any, azurite: Any, azurite_names: Any
) -> None:
    policy = RolloutPolicy(bake_seconds=0, batch_percent=20, max_unavailable_percent=20)
    run = run_rollout(
        arm_emulator,
        azurite.connection_string,
        azurite_names.table_prefix,
        SCALE_INSTANCES,
        policy=policy,
        token=EMULATOR_TOKEN,
    )
    assert run.phase is Phase.SUCCEEDED
    assert run.extension_writes == 1
    assert run.upgraded_instances == SCALE_INSTANCES  # nobody upgraded twice, nobody left out
    assert run.manualupgrade_calls == expected_batches(SCALE_INSTANCES, policy)
    assert run.max_instances_per_call == policy.calculate_batch_size(SCALE_INSTANCES)
    # A tick is one scale set GET, a paged VM list (page size 50) and the probes: seconds, not minutes.
    assert run.slowest_tick < 10, run.tick_seconds
