"""The crash harness (tests/service/test_crash_harness.py) on a Flexible scale set whose VMs do not
report latestModelApplied: the service reads the latest model from the rollout's records, and a host
dies at every boundary of the same four scenarios. Every fleet invariant of ``tests.chaos`` must hold
and each rollout must end as its scenario says.

One promise is weaker here, by design (docs/design.md, "Flexible orchestration"): an upgrade whose
call is not known to have reached ARM (the host died around it, or ARM refused it) is sent again, so
an instance may be upgraded to a model it already runs. ``double-upgrade`` is therefore not checked;
instead no instance is upgraded more than twice in a rollout that succeeds."""

from __future__ import annotations

from typing import Any

import pytest

from rollout.model import Phase
from rollout.releases import rollout_id_for
from tests.chaos import ChaosWorld, describe
from tests.service.test_crash_harness import CHECKED, SCENARIOS, Scenario, boundaries, run_scenario

FLEXIBLE = {"orchestration_mode": "Flexible", "flexible_model_applied": "absent", "apply_model_at": "call"}
CHECKED_FLEXIBLE = CHECKED - {"double-upgrade"}


class FlexibleScenario(Scenario):
    def make_world(self) -> ChaosWorld:
        return ChaosWorld(**{**self.world, **FLEXIBLE})


FLEXIBLE_SCENARIOS = [FlexibleScenario(s.name, s.steps, s.release, s.expect, s.world) for s in SCENARIOS]
CASES = [
    pytest.param(s, k, id=f"flexible-{s.name}-{name}")
    for s in FLEXIBLE_SCENARIOS
    for k, name in enumerate(boundaries(s))
]


def test_the_flexible_worlds_are_flexible_and_end_as_expected_without_a_crash() -> None:
    for scenario in FLEXIBLE_SCENARIOS:
        world = run_scenario(scenario, None, CHECKED_FLEXIBLE)
        assert world.scale_set.flexible and all(not i.isdigit() for i in world.scale_set.instances)
        world.quiesce()
        rollout = world.rollout(rollout_id_for(scenario.release))
        assert rollout is not None and rollout.phase is scenario.expect, describe(world)
        assert rollout.unsent_ids == (), rollout.unsent_ids


@pytest.mark.parametrize(("scenario", "crash_at"), CASES)
def test_a_host_dies_at_a_boundary_of_a_flexible_rollout_and_another_host_converges(
    scenario: Any, crash_at: int
) -> None:
    world = run_scenario(scenario, crash_at, CHECKED_FLEXIBLE)
    assert world.crash_at is None, "the crash did not happen"
    world.quiesce()
    rollout = world.rollout(rollout_id_for(scenario.release))
    assert rollout is not None, describe(world)
    assert rollout.phase is scenario.expect, f"ended {rollout.phase.value}: {rollout.reason}\n{describe(world)}"
    upgrades = {i: inst.upgrades for i, inst in world.scale_set.instances.items()}
    if scenario.expect is Phase.SUCCEEDED:
        assert set(upgrades.values()) <= {1, 2} and min(upgrades.values()) == 1, upgrades
