"""Health verdicts and the reasons given for them (rollout/analysis.py).

The reasons are what an operator reads in the rollout's status and audit trail ("Every transition
writes an audit event with its reason", README), so their wording is asserted here, not only the
verdicts. The canary-vs-baseline rules are those of docs/design.md "Canary analysis".
"""

from __future__ import annotations

import pytest

from rollout.analysis import Verdict, assess_canary, assess_instance, assess_latency, describe_instance
from rollout.model import Health, InstanceView, ProbeResult

OK = ProbeResult(True, "200 in 2 ms")
BAD = ProbeResult(False, "500 Internal Server Error")


def view(
    instance_id: str = "0",
    *,
    latest: bool = True,
    state: str = "Succeeded",
    power: str | None = "running",
    ext: str | None = "Succeeded",
    message: str = "",
    vm_health: str | None = None,
    probe: ProbeResult | None = OK,
) -> InstanceView:
    return InstanceView(
        instance_id=instance_id,
        latest_model_applied=latest,
        provisioning_state=state,
        power_state=power,
        extension_status=ext,
        extension_message=message,
        vm_health=vm_health,
        private_ip="10.0.0.4",
        probe=probe,
    )


def ms(latency: float | None, ok: bool = True) -> ProbeResult:
    return ProbeResult(ok, "200" if ok else "500", latency)


# --- one instance ------------------------------------------------------------------------------------


def test_an_instance_without_the_extension_is_judged_by_its_probe() -> None:
    assert assess_instance(view(ext=None)) is Health.HEALTHY
    assert assess_instance(view(ext=None, probe=BAD)) is Health.UNHEALTHY


@pytest.mark.parametrize(
    ("instance", "reason"),
    [
        (view(state="Failed", ext="Succeeded"), "instance 0: provisioning failed"),
        (view(state="Failed", ext=None), "instance 0: provisioning failed"),
        (view(ext="Failed", message=""), "instance 0: extension failed"),
        (view(ext="Failed", message="  \n  "), "instance 0: extension failed"),
        (
            view(ext="Failed", message="Enable failed\nexit status 1\nline three\nline four"),
            "instance 0: extension failed (Enable failed exit status 1 line three)",
        ),
        (view(state="Updating"), "instance 0: updating"),
        (view(power="stopped"), "instance 0: power state stopped"),
        (view(power=None, vm_health="Unhealthy"), "instance 0: application health extension reports Unhealthy"),
        (view(vm_health="unhealthy"), "instance 0: application health extension reports Unhealthy"),
        (view(power=None, probe=None), "instance 0: not probed (no private IP)"),
        (view(probe=BAD), "instance 0: probe failed: 500 Internal Server Error"),
        (view(vm_health="Healthy"), "instance 0: healthy (200 in 2 ms)"),
    ],
)
def test_describe_instance_says_why(instance: InstanceView, reason: str) -> None:
    assert describe_instance(instance) == reason


# --- the canary against the baseline ------------------------------------------------------------------


def test_no_canary_observed_is_pending() -> None:
    a = assess_canary([], [view("1", latest=False)])
    assert (a.verdict, a.reason) == (Verdict.PENDING, "no canary instance observed")


def test_every_failed_canary_is_named() -> None:
    canaries = [view("0", ext="Failed", message="boom"), view("1", state="Failed"), view("2")]
    a = assess_canary(canaries, [])
    assert a.verdict is Verdict.FAILED
    assert a.reason == "instance 0: extension failed (boom); instance 1: provisioning failed"


def test_every_unhealthy_canary_is_named() -> None:
    canaries = [view("0", probe=BAD), view("1", power="stopped"), view("2")]
    a = assess_canary(canaries, [view("3", latest=False)])
    assert a.verdict is Verdict.UNHEALTHY
    assert a.reason == "instance 0: probe failed: 500 Internal Server Error; instance 1: power state stopped"


def test_inconclusive_says_how_much_of_the_baseline_is_down() -> None:
    baseline = [view("1", latest=False, probe=BAD), view("2", latest=False, state="Failed"), view("3", latest=False)]
    a = assess_canary([view("0", probe=BAD)], baseline)
    assert a.verdict is Verdict.INCONCLUSIVE
    assert a.reason == (
        "instance 0: probe failed: 500 Internal Server Error; but 2 of 3 baseline instances are unhealthy too"
    )


def test_half_the_baseline_down_is_not_more_than_half() -> None:
    baseline = [view("1", latest=False, probe=BAD), view("2", latest=False)]
    assert assess_canary([view("0", probe=BAD)], baseline).verdict is Verdict.UNHEALTHY


def test_pending_names_every_canary_still_on_its_way() -> None:
    canaries = [view("0", latest=False), view("1", state="Updating"), view("2")]
    a = assess_canary(canaries, [])
    assert (a.verdict, a.reason) == (Verdict.PENDING, "waiting for instance 0, instance 1")


def test_successful_says_how_many() -> None:
    a = assess_canary([view("0"), view("1")], [view("2", latest=False)])
    assert (a.verdict, a.reason) == (Verdict.SUCCESSFUL, "2 instance(s) on the new model and healthy")


# --- latency (LATENCY_RATIO, LATENCY_MIN_DELTA_MS) -----------------------------------------------------


def latency(canary_ms: list[float | None], baseline: list[ProbeResult], ratio: float, delta: float) -> str | None:
    canaries = [view(str(i), probe=ms(v)) for i, v in enumerate(canary_ms)]
    old = [view(str(10 + i), latest=False, probe=p) for i, p in enumerate(baseline)]
    return assess_latency(canaries, old, ratio, delta)


@pytest.mark.parametrize(
    ("canary_ms", "baseline_ms", "ratio", "delta", "slower"),
    [
        ([200.0], [100.0], 2.0, 50.0, False),  # exactly 2x is not "more than 2x"
        ([201.0], [100.0], 2.0, 50.0, True),
        ([150.0], [100.0], 1.2, 50.0, False),  # exactly 50 ms slower is not "more than 50 ms"
        ([150.5], [100.0], 1.2, 50.0, True),
        ([150.0], [100.0], 2.0, 10.0, False),  # faster than 2x: the ratio is not met
        ([60.0], [25.0], 2.0, 50.0, False),  # 2.4x but only 35 ms slower
        ([45.0], [10.0, 20.0, 30.0, 1000.0], 2.0, 10.0, False),  # median of four: (20 + 30) / 2 = 25
        ([55.0], [10.0, 20.0, 30.0, 1000.0], 2.0, 10.0, True),
        ([50.0], [10.0, 20.0, 30.0, 40.0, 1000.0], 2.0, 10.0, False),  # median of five: 30
        ([70.0], [10.0, 30.0, 1000.0], 2.0, 10.0, True),  # median of three: the middle one (30), not the mean
        ([55.0], [10.0, 30.0, 1000.0], 2.0, 10.0, False),
        ([20.0, 30.0, 40.0, 1000.0], [15.0], 2.0, 5.0, True),  # the canaries' median: 35, not one slow probe
    ],
)
def test_latency_thresholds_and_medians(
    canary_ms: list[float | None], baseline_ms: list[float], ratio: float, delta: float, slower: bool
) -> None:
    result = latency(canary_ms, [ms(v) for v in baseline_ms], ratio, delta)
    assert (result is not None) is slower, result


def test_latency_reason_gives_both_medians_and_the_limits() -> None:
    assert latency([400.0], [ms(20.0)], 2.0, 50.0) == (
        "canary median latency 400 ms vs baseline 20 ms (more than 2x and 50 ms slower)"
    )


def test_only_healthy_baseline_instances_with_a_latency_are_compared() -> None:
    # The unhealthy baseline instance answered (slowly, with a 500): it is not the healthy baseline.
    baseline = [ms(20.0), ms(3000.0, ok=False), ms(3000.0, ok=False), ProbeResult(True, "200", None)]
    assert latency([400.0], baseline, 2.0, 50.0) is not None
    # A canary probe without a latency figure is left out rather than compared.
    assert latency([None, 400.0], [ms(20.0)], 2.0, 50.0) is not None
    assert latency([None], [ms(20.0)], 2.0, 50.0) is None


def test_the_default_latency_floor_is_50_ms() -> None:
    canaries = [view("0", probe=ms(100.5))]
    baseline = [view("1", latest=False, probe=ms(50.0))]
    a = assess_canary(canaries, baseline, latency_ratio=1.5)
    assert a.verdict is Verdict.UNHEALTHY, a.reason
    assert assess_canary([view("0", probe=ms(100.0))], baseline, latency_ratio=1.5).verdict is Verdict.SUCCESSFUL
