"""Pre-flight's policy arithmetic and the what-if's batch plan, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rollout.model import EventKind, FleetView, InstanceView, ModelSpec, ProbeResult, RolloutEvent
from rollout.policy import RolloutPolicy
from rollout.preflight import Severity, policy_findings
from rollout.whatif import batch_plan, rollback_steps, upgrade_seconds

P = RolloutPolicy


@pytest.mark.parametrize(
    ("policy", "n", "expected"),
    [
        # The example: 20% of 2 rounds up to 1 instance, half the fleet.
        (P(), 2, [(Severity.REFUSE, "MAX_UNAVAILABLE 20% of 2 instance(s) rounds up to 1 instance(s) (50%")]),
        (P(max_unavailable_percent=10), 2, [(Severity.REFUSE, "rounds up to 1 instance(s) (50%")]),
        # A count says the operator accepts it.
        (P(max_unavailable=1), 2, []),
        # 50% or more asked: half the fleet is what was asked for.
        (P(max_unavailable_percent=50), 2, []),
        # 20% of 3 is 33%: possible, but more than asked.
        (P(), 3, [(Severity.WARN, "MAX_UNAVAILABLE 20% of 3 instance(s) rounds up to 1 instance(s): 33%")]),
        (P(), 5, []),
        (P(), 1, [(Severity.REFUSE, "CANARY_COUNT 1 covers all 1 instance(s)")]),
        (P(canary_count=3, max_unavailable=3), 3, [(Severity.REFUSE, "CANARY_COUNT 3 covers all 3 instance(s)")]),
        (P(max_unavailable=4), 4, [(Severity.REFUSE, "MAX_UNAVAILABLE 4 (with CANARY_COUNT 1) lets 4 of 4")]),
        (P(max_unavailable_percent=100), 10, [(Severity.REFUSE, "lets 10 of 10 instance(s) be down at once")]),
        (
            P(min_healthy_instances=6),
            5,
            [(Severity.REFUSE, "MIN_HEALTHY_INSTANCES 6 is more than the 5 instance(s) of the scale set")],
        ),
        (P(batch_size=3, max_unavailable=2), 10, [(Severity.WARN, "batches of 3 are capped at the unavailability")]),
        (P(canary_count=3, max_unavailable=2), 10, [(Severity.WARN, "CANARY_COUNT 3 is more than the budget of 2")]),
        (P(), 0, [(Severity.REFUSE, "the scale set has no instances")]),
    ],
)
def test_policy_findings(policy: RolloutPolicy, n: int, expected: list[tuple[Severity, str]]) -> None:
    found = policy_findings(policy, n)
    assert len(found) == len(expected), found
    for finding, (severity, text) in zip(found, expected, strict=True):
        assert finding.severity is severity and text in finding.reason, finding


def view(iid: str, ok: bool = True) -> InstanceView:
    return InstanceView(
        iid, latest_model_applied=True, provisioning_state="Succeeded", probe=ProbeResult(ok, "200" if ok else "500")
    )


def fleet(*views: InstanceView) -> FleetView:
    return FleetView(model=ModelSpec(), provisioning_state="Succeeded", instances=views)


def test_the_canary_is_the_lowest_healthy_id_and_unavailable_instances_go_first_in_the_batches() -> None:
    steps, stall = batch_plan(fleet(*(view(str(i)) for i in range(10)), view("10", ok=False)), P(max_unavailable=3))
    assert stall is None
    # 20% of 11 is 3 a batch; the unavailable 10 costs no budget, so it goes in the first batch.
    assert [(s.kind, s.instance_ids, s.unavailable) for s in steps] == [
        ("canary", ("0",), 2),
        ("batch", ("1", "2", "10"), 3),
        ("batch", ("3", "4", "5"), 3),
        ("batch", ("6", "7", "8"), 3),
        ("batch", ("9",), 1),
    ]


def test_the_plan_of_progressive_batches_is_the_policys_batch_plan() -> None:
    policy = P(batch_mode="progressive", max_unavailable=4)
    steps, stall = batch_plan(fleet(*(view(str(i)) for i in range(12))), policy)
    assert stall is None
    sizes = tuple(len(s.instance_ids) for s in steps if s.kind == "batch")
    assert sizes == (1, 2, 4, 4) == policy.batch_plan(12)
    assert [s.instance_ids for s in steps][:3] == [("0",), ("1",), ("2", "3")]


def test_a_budget_used_up_by_unavailable_instances_leaves_no_canary() -> None:
    steps, stall = batch_plan(fleet(view("0"), view("1", ok=False), view("2"), view("3"), view("4")), P())
    assert steps == [] and stall is not None and stall.severity is Severity.WARN
    assert stall.reason == "no canary can be chosen now: 1 instance(s) down use the budget"


def test_upgrade_times_are_batch_start_to_success_and_rollback_steps_follow_the_mode() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def event(kind: EventKind, seconds: float) -> RolloutEvent:
        return RolloutEvent("r", "rg:vmss", t0 + timedelta(seconds=seconds), kind, "")

    trail = [
        event(EventKind.BATCH_STARTED, 0),
        event(EventKind.BATCH_SUCCEEDED, 40),
        event(EventKind.BATCH_STARTED, 50),
        event(EventKind.HEALTH_CHECK_FAILED, 60),
        event(EventKind.BATCH_SUCCEEDED, 120),
        event(EventKind.BATCH_STARTED, 130),  # never finished: not counted
    ]
    assert upgrade_seconds([trail, []]) == [40.0, 70.0]
    assert rollback_steps(P(max_unavailable=2), 10, 5) == 3
    assert rollback_steps(P(rollback_mode="all-at-once"), 10, 5) == 1
    assert rollback_steps(P(), 10, 0) == 0
