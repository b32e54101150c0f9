"""The randomized two-host test (tests/service/test_chaos.py) on a Flexible scale set whose VMs do not
report latestModelApplied, so every decision reads the latest model from the rollout's records: the
same rules (releases, verbs, crashes, ETag races, ARM faults and 429s, scale-out and scale-in, health
flips, hand edits, clock jumps) and the same invariants, but ``double-upgrade``. An upgrade whose call
is not known to have reached ARM is sent again there (docs/design.md, "Flexible orchestration"), so an
instance may be upgraded to a model it already runs; every fleet and budget invariant still holds.

CI runs a fifth of ``CHAOS_EXAMPLES`` (200 of 1,000) derandomized; ``CHAOS_EXAMPLES`` and
``CHAOS_RANDOM`` work as for the Uniform test."""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis.stateful import initialize, run_state_machine_as_test

from tests.chaos import ChaosWorld
from tests.service import test_chaos as uniform
from tests.service.test_chaos import quiet_logs as quiet_logs  # the same autouse fixture

FLEXIBLE = {"orchestration_mode": "Flexible", "flexible_model_applied": "absent", "apply_model_at": "call"}


class FlexibleWorld(ChaosWorld):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{**kwargs, **FLEXIBLE})


class FlexibleChaosMachine(uniform.ChaosMachine):
    @initialize(
        size=uniform.st.integers(2, 6),
        max_unavailable=uniform.st.integers(1, 2),
        batch_size=uniform.st.integers(1, 3),
        upgrade_observations=uniform.st.integers(1, 3),
        rollback_reimage=uniform.st.booleans(),
        batch_mode=uniform.st.sampled_from(("fixed", "progressive")),
    )
    def setup(  # type: ignore[override]
        self,
        size: int,
        max_unavailable: int,
        batch_size: int,
        upgrade_observations: int,
        rollback_reimage: bool,
        batch_mode: str = "fixed",
    ) -> None:
        # The Uniform machine's setup, building a Flexible world ("call": a reimage re-runs a VM's own
        # model, as in the ARM emulator, so it never hides an upgrade that was not sent).
        real = uniform.ChaosWorld
        uniform.ChaosWorld = FlexibleWorld  # type: ignore[misc]
        try:
            uniform.ChaosMachine.setup(
                self,
                size=size,
                max_unavailable=max_unavailable,
                batch_size=batch_size,
                upgrade_observations=upgrade_observations,
                model_applied="content",
                apply_model_at="call",
                rollback_reimage=rollback_reimage,
                batch_mode=batch_mode,
            )
        finally:
            uniform.ChaosWorld = real  # type: ignore[misc]
        assert self.w.scale_set.flexible
        self.w.oracle.enabled -= {"double-upgrade"}


SETTINGS = settings(uniform.SETTINGS, max_examples=max(20, uniform.EXAMPLES // 5))


def test_two_hosts_under_chaos_on_a_flexible_scale_set() -> None:
    run_state_machine_as_test(FlexibleChaosMachine, settings=SETTINGS)
