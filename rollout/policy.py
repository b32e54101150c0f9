"""RolloutPolicy: how careful a rollout is. Pure; built from settings by ``rollout.settings``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from rollout.knobs import check_knobs, knob

ROLLBACK_MODES = ("budgeted", "all-at-once")
# How promotion batches are sized: "fixed" (BATCH_SIZE or BATCH_PERCENT, every batch) or "progressive"
# (1, 2, 4, ... instances, each capped by MAX_UNAVAILABLE).
BATCH_MODES = ("fixed", "progressive")


@dataclass(frozen=True)
class RolloutPolicy:
    """Every field is a knob (``rollout.knobs``): its default, bounds, app setting and README text live
    here only; ``rollout.settings`` parses the app settings from these declarations."""

    canary_count: int = knob(1, "CANARY_COUNT", "instances in the canary", minimum=1)
    bake_seconds: int = knob(300, "BAKE_SECONDS", "healthy time the canary must show before promotion", minimum=0)
    # Promotion batches: a share of the fleet (rounded up, at least 1), or a fixed size.
    batch_percent: int = knob(
        20,
        "BATCH_PERCENT",
        "promotion batch size as a share of the fleet in percent (rounded up, at least 1)",
        minimum=1,
        maximum=100,
    )
    batch_size: int = knob(
        0,
        "BATCH_SIZE",
        "a fixed promotion batch size instead of `BATCH_PERCENT`",
        minimum=0,
        zero_means="use batch_percent",
    )
    batch_mode: str = knob(
        BATCH_MODES[0],
        "BATCH_MODE",
        "how promotion batches are sized: `fixed` (`BATCH_SIZE` or `BATCH_PERCENT`, every batch) or `progressive` "
        "(1, 2, 4, ... instances, each capped by `MAX_UNAVAILABLE`)",
        choices=BATCH_MODES,
    )
    # Instances updating or unhealthy at once: MAX_UNAVAILABLE sets one of these ("2" or "25%").
    max_unavailable: int = knob(
        0,
        "MAX_UNAVAILABLE",
        "instances updating or unhealthy at once: a count (`2`) or a share of the fleet, rounded up (`25%`)",
        minimum=0,
        zero_means="use max_unavailable_percent",
    )
    max_unavailable_percent: int = knob(20, "MAX_UNAVAILABLE", "", minimum=1, maximum=100, percent=True)
    failure_threshold: int = knob(
        3, "FAILURE_THRESHOLD", "consecutive unhealthy observations before rolling back", minimum=1
    )
    progress_deadline_seconds: int = knob(
        900,
        "PROGRESS_DEADLINE_SECONDS",
        "no step forward for this long rolls back (twice this for a rollback: `Failed`)",
        minimum=1,
    )
    upgrade_retry_seconds: int = knob(
        300,
        "UPGRADE_RETRY_SECONDS",
        "an upgrade that never started, or a reimage never confirmed sent, is issued again after this long",
        minimum=1,
    )
    # The engine's own next look (rollout.cadence): while an upgrade is in flight, look again this often
    # instead of waiting for the timer, and look at the bake's end; 0 = the timer only.
    look_interval_seconds: int = knob(
        5,
        "LOOK_INTERVAL_SECONDS",
        "while an upgrade runs, look again this often instead of waiting for the timer (times the number of "
        "targets with work), and look when the bake ends; `0`: only the timer looks",
        minimum=0,
        maximum=3600,
    )
    min_healthy_instances: int = knob(
        1, "MIN_HEALTHY_INSTANCES", "pre-flight: healthy instances needed to start", minimum=1
    )
    # Script releases: after moving an instance back to the baseline model, reimage it (a fresh disk
    # from the image, then the baseline extension). Re-running the old script over a disk the bad
    # release changed does not undo the release; release scripts are written for fresh VMs.
    rollback_reimage: bool = knob(
        True,
        "ROLLBACK_REIMAGE",
        "script releases: reimage the instances moved back to the baseline (re-running the old script does "
        "not undo the bad one's changes on disk); `false` reimages only instances the baseline leaves unhealthy",
    )
    # Canary vs baseline latency (Kayenta-style): a canary whose median probe latency is more than
    # latency_ratio times the baseline's, and slower by more than latency_min_delta_ms, is unhealthy.
    # 0 = off. The absolute floor keeps loopback-fast fleets (1 ms vs 3 ms) from tripping it.
    latency_ratio: float = knob(
        0.0,
        "LATENCY_RATIO",
        "canary vs baseline latency: the canary's median probe latency more than this many times the healthy "
        "baseline's (and slower by more than `LATENCY_MIN_DELTA_MS`) counts as unhealthy",
        minimum=1,
        zero_means="off",
    )
    latency_min_delta_ms: float = knob(
        50.0, "LATENCY_MIN_DELTA_MS", "the least slowdown in ms that `LATENCY_RATIO` counts as unhealthy", minimum=0
    )
    # The canary judge (rollout.judge, docs/safety.md "The canary judge"): the canary against as many baseline
    # instances over the same window, at every tick of the bake, with a sequential test.
    judge_alpha: float = knob(
        0.05,
        "JUDGE_ALPHA",
        "the canary judge's false-Fail rate over a whole bake: the chance that a canary no worse than the allowed "
        "effect is rolled back on the statistics (spent over the bake's ticks)",
        minimum=0.0001,
        maximum=0.5,
    )
    judge_pass_alpha: float = knob(
        0.05,
        "JUDGE_PASS_ALPHA",
        "the chance that the judge passes a canary worse than the allowed effect before the bake ends",
        minimum=0.0001,
        maximum=0.5,
    )
    judge_error_margin_percent: float = knob(
        1.0,
        "JUDGE_ERROR_MARGIN_PERCENT",
        "the allowed increase of the canary's error rate over the baseline's, in percentage points",
        minimum=0,
        maximum=99,
    )
    judge_latency_ratio: float = knob(
        1.2,
        "JUDGE_LATENCY_RATIO",
        "the allowed slowdown: the judge fails a canary whose latencies are significantly above this many times "
        "the baseline's (plus `LATENCY_MIN_DELTA_MS`)",
        minimum=1,
        maximum=100,
    )
    judge_min_samples: int = knob(
        10, "JUDGE_MIN_SAMPLES", "requests (or latencies) per side before the judge tests a metric", minimum=1
    )
    judge_marginal_p: float = knob(
        0.1,
        "JUDGE_MARGINAL_P",
        "at the end of the bake, a metric beyond its allowed effect with a p-value below this (not conclusive) "
        "makes the verdict Marginal: the rollout pauses for `promote` or `abort`",
        minimum=0.0001,
        maximum=0.5,
    )
    # How a rollback uses capacity. "budgeted": instances that are unhealthy are moved back (and
    # reimaged) at once, healthy ones only within the unavailability budget, like promotion batches.
    # "all-at-once": every instance in one call, whatever that takes offline (fastest, least safe).
    rollback_mode: str = knob(
        ROLLBACK_MODES[0],
        "ROLLBACK_MODE",
        "how a rollback uses capacity: `budgeted` moves back (and reimages) unhealthy instances at once and "
        "healthy ones only within `MAX_UNAVAILABLE`; `all-at-once` moves every instance in one call",
        choices=ROLLBACK_MODES,
    )

    def __post_init__(self) -> None:
        check_knobs(self)

    def calculate_batch_size(self, fleet_size: int) -> int:
        """The number of instances one promotion batch may hold, before the unavailability budget."""
        if self.batch_size:
            return self.batch_size
        return max(1, math.ceil(fleet_size * self.batch_percent / 100))

    def promotion_batch_size(self, fleet_size: int, promoted: int) -> int:
        """The most instances the next promotion batch may hold, before the unavailability budget and what
        remains limit it further. ``promoted``: the instances already on the release besides the canary.

        ``fixed``: ``calculate_batch_size``, every batch. ``progressive``: one more than ``promoted``, so
        batches of 1, 2, 4, ... on a healthy fleet (each doubles what is on the release), never more than
        ``MAX_UNAVAILABLE``. Counted from the instances, not from a batch number, a batch trimmed or lost
        never makes the next one larger than what the release has shown on."""
        if self.batch_mode != "progressive":
            return self.calculate_batch_size(fleet_size)
        return max(1, min(max(promoted, 0) + 1, self.calculate_max_unavailable(fleet_size)))

    def batch_plan(self, fleet_size: int) -> tuple[int, ...]:
        """The promotion batch sizes a healthy fleet of ``fleet_size`` goes through after the canary: each
        batch as ``promotion_batch_size`` and the unavailability budget allow, the last one what remains."""
        remaining = max(0, fleet_size - min(self.canary_count, fleet_size))
        budget = self.calculate_max_unavailable(fleet_size)
        sizes: list[int] = []
        while remaining > 0:
            size = min(self.promotion_batch_size(fleet_size, sum(sizes)), budget, remaining)
            sizes.append(size)
            remaining -= size
        return tuple(sizes)

    def calculate_max_unavailable(self, fleet_size: int) -> int:
        """How many instances may be updating or unhealthy at once. Never 0: that would deadlock."""
        if self.max_unavailable:
            return self.max_unavailable
        return max(1, math.ceil(fleet_size * self.max_unavailable_percent / 100))

    def calculate_canary_budget(self, fleet_size: int) -> int:
        """Instances that may be unavailable at once while the canary is chosen or upgraded: the
        unavailability budget, but never fewer than the configured canary."""
        return max(self.canary_count, self.calculate_max_unavailable(fleet_size))
