"""RolloutPolicy: how careful a rollout is. Pure; built from settings by ``rollout.settings``."""

from __future__ import annotations

import math
from dataclasses import dataclass

ROLLBACK_MODES = ("budgeted", "all-at-once")


@dataclass(frozen=True)
class RolloutPolicy:
    canary_count: int = 1
    bake_seconds: int = 300
    batch_percent: int = 20  # of the fleet, rounded up, at least 1
    batch_size: int = 0  # fixed batch size; 0 = use batch_percent
    max_unavailable: int = 0  # instances updating or unhealthy at once; 0 = use max_unavailable_percent
    max_unavailable_percent: int = 20  # of the fleet, rounded up, at least 1
    failure_threshold: int = 3  # consecutive unhealthy observations before rolling back
    progress_deadline_seconds: int = 900  # no step forward for this long -> roll back
    upgrade_retry_seconds: int = 300  # re-issue an upgrade that never started after this long
    min_healthy_instances: int = 1  # pre-flight: at least this many healthy instances
    # Script releases: after moving an instance back to the baseline model, reimage it (a fresh disk
    # from the image, then the baseline extension). Re-running the old script over a disk the bad
    # release changed does not undo the release; release scripts are written for fresh VMs.
    rollback_reimage: bool = True
    # Canary vs baseline latency (Kayenta-style): a canary whose median probe latency is more than
    # latency_ratio times the baseline's, and slower by more than latency_min_delta_ms, is unhealthy.
    # 0 = off. The absolute floor keeps loopback-fast fleets (1 ms vs 3 ms) from tripping it.
    latency_ratio: float = 0.0
    latency_min_delta_ms: float = 50.0
    # How a rollback uses capacity. "budgeted": instances that are unhealthy are moved back (and
    # reimaged) at once, healthy ones only within the unavailability budget, like promotion batches.
    # "all-at-once": every instance in one call, whatever that takes offline (fastest, least safe).
    rollback_mode: str = "budgeted"

    def __post_init__(self) -> None:
        problems = []
        if self.canary_count < 1:
            problems.append("canary_count must be at least 1")
        if self.bake_seconds < 0:
            problems.append("bake_seconds must not be negative")
        if not 1 <= self.batch_percent <= 100:
            problems.append("batch_percent must be between 1 and 100")
        if self.batch_size < 0:
            problems.append("batch_size must not be negative (0 = use batch_percent)")
        if self.max_unavailable < 0:
            problems.append("max_unavailable must not be negative (0 = use max_unavailable_percent)")
        if not 1 <= self.max_unavailable_percent <= 100:
            problems.append("max_unavailable_percent must be between 1 and 100")
        if self.failure_threshold < 1:
            problems.append("failure_threshold must be at least 1")
        if self.progress_deadline_seconds < 1:
            problems.append("progress_deadline_seconds must be at least 1")
        if self.upgrade_retry_seconds < 1:
            problems.append("upgrade_retry_seconds must be at least 1")
        if self.min_healthy_instances < 1:
            problems.append("min_healthy_instances must be at least 1")
        if self.latency_ratio != 0 and self.latency_ratio < 1:
            problems.append("latency_ratio must be 0 (off) or at least 1")
        if self.latency_min_delta_ms < 0:
            problems.append("latency_min_delta_ms must not be negative")
        if self.rollback_mode not in ROLLBACK_MODES:
            problems.append(f"rollback_mode must be one of {', '.join(ROLLBACK_MODES)}")
        if problems:
            raise ValueError("; ".join(problems))

    def calculate_batch_size(self, fleet_size: int) -> int:
        """The number of instances one promotion batch may hold, before the unavailability budget."""
        if self.batch_size:
            return self.batch_size
        return max(1, math.ceil(fleet_size * self.batch_percent / 100))

    def calculate_max_unavailable(self, fleet_size: int) -> int:
        """How many instances may be updating or unhealthy at once. Never 0: that would deadlock."""
        if self.max_unavailable:
            return self.max_unavailable
        return max(1, math.ceil(fleet_size * self.max_unavailable_percent / 100))

    def calculate_canary_budget(self, fleet_size: int) -> int:
        """Instances that may be unavailable at once while the canary is chosen or upgraded: the
        unavailability budget, but never fewer than the configured canary."""
        return max(self.canary_count, self.calculate_max_unavailable(fleet_size))
