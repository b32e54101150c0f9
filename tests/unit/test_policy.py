"""RolloutPolicy: every limit it refuses, the edge values it accepts, and the batch/budget arithmetic.

The policy's errors reach the operator verbatim ("invalid settings: ..." from rollout.settings), so the
sentences are part of the behaviour: one sentence per bad field, all of them in one error.
"""

from __future__ import annotations

import pytest

from rollout.policy import RolloutPolicy

REFUSED = [
    ({"canary_count": 0}, "canary_count must be at least 1"),
    ({"bake_seconds": -1}, "bake_seconds must not be negative"),
    ({"batch_percent": 0}, "batch_percent must be between 1 and 100"),
    ({"batch_percent": 101}, "batch_percent must be between 1 and 100"),
    ({"batch_size": -1}, "batch_size must not be negative (0 = use batch_percent)"),
    ({"max_unavailable": -1}, "max_unavailable must not be negative (0 = use max_unavailable_percent)"),
    ({"max_unavailable_percent": 0}, "max_unavailable_percent must be between 1 and 100"),
    ({"max_unavailable_percent": 101}, "max_unavailable_percent must be between 1 and 100"),
    ({"failure_threshold": 0}, "failure_threshold must be at least 1"),
    ({"progress_deadline_seconds": 0}, "progress_deadline_seconds must be at least 1"),
    ({"upgrade_retry_seconds": 0}, "upgrade_retry_seconds must be at least 1"),
    ({"min_healthy_instances": 0}, "min_healthy_instances must be at least 1"),
    ({"latency_ratio": 0.5}, "latency_ratio must be 0 (off) or at least 1"),
    ({"latency_ratio": -1.0}, "latency_ratio must be 0 (off) or at least 1"),
    ({"latency_min_delta_ms": -0.5}, "latency_min_delta_ms must not be negative"),
    ({"rollback_mode": "fast"}, "rollback_mode must be one of budgeted, all-at-once"),
    ({"batch_mode": "doubling"}, "batch_mode must be one of fixed, progressive"),
    # NaN compares false with every bound, so it used to pass them all (found by the bad-input properties).
    ({"latency_ratio": float("nan")}, "latency_ratio must be a finite number"),
    ({"latency_min_delta_ms": float("nan")}, "latency_min_delta_ms must be a finite number"),
    ({"latency_min_delta_ms": float("inf")}, "latency_min_delta_ms must be a finite number"),
]


@pytest.mark.parametrize(("values", "message"), REFUSED, ids=[m for _, m in REFUSED])
def test_each_bad_value_is_refused_with_its_own_sentence(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        RolloutPolicy(**values)
    assert str(caught.value) == message


def test_every_problem_is_named_in_one_error() -> None:
    with pytest.raises(ValueError) as caught:
        RolloutPolicy(canary_count=0, bake_seconds=-1, latency_min_delta_ms=-1)
    assert str(caught.value) == (
        "canary_count must be at least 1; bake_seconds must not be negative; latency_min_delta_ms must not be negative"
    )


@pytest.mark.parametrize(
    "values",
    [
        {"canary_count": 1},
        {"bake_seconds": 0},  # BAKE_SECONDS=0: promote as soon as the canary is healthy
        {"batch_percent": 1},
        {"batch_percent": 100},
        {"batch_size": 0},
        {"max_unavailable": 0},
        {"max_unavailable_percent": 1},
        {"max_unavailable_percent": 100},
        {"failure_threshold": 1},
        {"progress_deadline_seconds": 1},
        {"upgrade_retry_seconds": 1},
        {"min_healthy_instances": 1},
        {"latency_ratio": 0.0},  # off
        {"latency_ratio": 1.0},  # the lowest ratio that means something
        {"latency_min_delta_ms": 0.0},
    ],
    ids=lambda values: ",".join(f"{k}={v}" for k, v in values.items()),
)
def test_the_edge_values_are_accepted(values: dict[str, object]) -> None:
    policy = RolloutPolicy(**values)
    for name, value in values.items():
        assert getattr(policy, name) == value


@pytest.mark.parametrize(
    ("policy", "fleet_size", "batch"),
    [
        (RolloutPolicy(batch_percent=20), 1, 1),  # at least one
        (RolloutPolicy(batch_percent=20), 0, 1),  # an empty fleet still gets a batch of one, never 0
        (RolloutPolicy(batch_percent=20), 6, 2),  # 1.2 rounds up
        (RolloutPolicy(batch_percent=25), 8, 2),  # exact: no rounding up past it
        (RolloutPolicy(batch_percent=100), 7, 7),
        (RolloutPolicy(batch_size=1, batch_percent=100), 50, 1),  # a fixed size wins over the share
        (RolloutPolicy(batch_size=3), 2, 3),  # fixed means fixed (the budget limits it later)
    ],
)
def test_batch_size(policy: RolloutPolicy, fleet_size: int, batch: int) -> None:
    assert policy.calculate_batch_size(fleet_size) == batch


@pytest.mark.parametrize(
    ("policy", "fleet_size", "budget"),
    [
        (RolloutPolicy(max_unavailable_percent=20), 1, 1),  # never 0: that would deadlock
        (RolloutPolicy(max_unavailable_percent=20), 0, 1),
        (RolloutPolicy(max_unavailable_percent=20), 6, 2),  # 1.2 rounds up
        (RolloutPolicy(max_unavailable_percent=25), 8, 2),
        (RolloutPolicy(max_unavailable_percent=100), 7, 7),
        (RolloutPolicy(max_unavailable=1, max_unavailable_percent=100), 50, 1),  # a count wins over the share
    ],
)
def test_max_unavailable(policy: RolloutPolicy, fleet_size: int, budget: int) -> None:
    assert policy.calculate_max_unavailable(fleet_size) == budget


def test_the_defaults_are_the_documented_ones() -> None:
    # README "Configuration": the defaults of the settings that build the policy.
    p = RolloutPolicy()
    assert (p.canary_count, p.bake_seconds, p.batch_percent, p.batch_size) == (1, 300, 20, 0)
    assert (p.max_unavailable, p.max_unavailable_percent, p.failure_threshold) == (0, 20, 3)
    assert (p.progress_deadline_seconds, p.upgrade_retry_seconds, p.min_healthy_instances) == (900, 300, 1)
    assert (p.rollback_reimage, p.latency_ratio, p.latency_min_delta_ms) == (True, 0.0, 50.0)
