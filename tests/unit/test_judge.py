"""The canary judge (rollout.judge): published values of its tests, its verdicts, and its error rates
measured by a seeded simulation (the figures docs/safety.md, "The canary judge", quotes)."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest

from rollout.judge import (
    JudgeState,
    Tally,
    Thresholds,
    Verdict,
    bin_value,
    error_rate_test,
    latency_bin,
    look,
    mann_whitney,
    spent,
    summary,
    two_proportion_z,
)

# --- published values -------------------------------------------------------------------------------

# NAG Library, g08amc (nag_mann_whitney) example program: data
# https://support.nag.com/numeric/cl/nagdoc_cl26.2/examples/data/g08amce.d.html and results
# https://support.nag.com/numeric/fl/nagdoc_cl26.2/examples/baseresults/g08amce.r.html:
# "Test statistic = 86.0000, Normal Statistic = -2.8039, Approximate tail probability = 0.0025" (lower tail).
NAG_GROUP_1 = [13.0, 6.0, 12.0, 7.0, 12.0, 7.0, 10.0, 7.0, 10.0, 7.0, 16.0, 7.0, 10.0, 8.0, 9.0, 8.0]
NAG_GROUP_2 = [17.0, 6.0, 10.0, 8.0, 15.0, 8.0, 15.0, 10.0, 15.0, 10.0, 14.0, 10.0, 14.0, 11.0, 14.0, 11.0]
NAG_GROUP_2 += [13.0, 12.0, 13.0, 12.0, 13.0, 12.0, 12.0]


def test_mann_whitney_matches_the_nag_example_with_ties() -> None:
    result = mann_whitney(NAG_GROUP_1, NAG_GROUP_2)
    assert result.u == 86.0
    assert round(result.p_less, 4) == 0.0025
    # The normal statistic NAG prints, from the same p: Phi(-2.8039).
    assert result.p_less == pytest.approx(0.5 * math.erfc(2.8039 / math.sqrt(2)), rel=2e-3)


def test_mann_whitney_matches_the_clickhouse_example() -> None:
    # ClickHouse's mannWhitneyUTest('greater') reference example (docs "mannwhitneyutest", mirrored at
    # https://volcengine.com/docs/6464/1362965): samples 10, 11, 12 against 1, 2, 3 give (9, 0.04042779918503192),
    # continuity-corrected normal approximation.
    result = mann_whitney([10, 11, 12], [1, 2, 3])
    assert result.u == 9.0
    assert result.p_greater == pytest.approx(0.04042779918503192, rel=1e-9)


def test_two_proportion_z_matches_a_published_worked_example() -> None:
    # https://homeworksource.com/p/1008622/find-the-test-statistic-z-for-the-following-situation-claim:
    # 140 of 200 against 255 of 340, pooled p = 0.7314815, standard error 0.03949401, z = -1.266015.
    result = two_proportion_z(140, 200, 255, 340, alternative="less")
    assert result.z == pytest.approx(-1.266015, abs=1e-6)
    # The one-sided p is the standard normal's lower tail at z (its Phi(-1.27) = 0.1020 in any z table).
    assert round(two_proportion_z(140, 200, 255, 340).p_value, 4) == round(2 * result.p_value, 4)
    assert round(result.p_value, 3) == 0.103


def test_the_normal_tail_is_right_at_the_textbook_quantiles() -> None:
    # z = 1.959964 is the 97.5% quantile of the standard normal, 1.644854 the 95% one.
    assert two_proportion_z(1, 1, 0, 1).p_value == pytest.approx(2 * 0.5 * math.erfc(1.414214 / math.sqrt(2)))
    from rollout.judge import _p_from_z

    assert _p_from_z(1.959964, "two-sided") == pytest.approx(0.05, abs=1e-6)
    assert _p_from_z(1.644854, "greater") == pytest.approx(0.05, abs=1e-6)
    assert _p_from_z(-1.644854, "less") == pytest.approx(0.05, abs=1e-6)
    with pytest.raises(ValueError, match="alternative"):
        _p_from_z(1.0, "sideways")


def test_two_proportion_z_refuses_impossible_counts() -> None:
    for args in [(1, 0, 1, 1), (3, 2, 0, 1), (-1, 5, 0, 5)]:
        with pytest.raises(ValueError, match="invalid counts"):
            two_proportion_z(*args)


def test_error_rate_test_is_the_agresti_caffo_statistic() -> None:
    # 12 errors of 100 against 2 of 100, margin 0.01, computed by hand:
    # pc = 13/102, pb = 3/102, se = sqrt(pc(1-pc)/102 + pb(1-pb)/102), z = (pc - pb - 0.01) / se.
    pc, pb = 13 / 102, 3 / 102
    z = (pc - pb - 0.01) / math.sqrt(pc * (1 - pc) / 102 + pb * (1 - pb) / 102)
    result = error_rate_test(Tally(100, 12), Tally(100, 2), 0.01)
    assert result.z == pytest.approx(z) and result.z == pytest.approx(2.3785, abs=1e-4)
    # Defined with no error on either side (the plain Wald statistic divides by zero there).
    assert math.isfinite(error_rate_test(Tally(20, 0), Tally(20, 0), 0.01).z)


# --- tallies and state --------------------------------------------------------------------------------


def test_the_latency_histogram_keeps_values_within_a_bin_and_the_median() -> None:
    for ms in (0.5, 3.0, 12.5, 250.0, 9000.0):
        assert bin_value(latency_bin(ms)) == pytest.approx(ms, rel=0.1)
    tally = Tally().add(5, 1, [10.0, 10.0, 11.0, 200.0])
    assert tally.requests == 5 and tally.errors == 1 and tally.latency_count == 4
    assert tally.median_ms() == pytest.approx(10.0, rel=0.1)
    assert Tally().median_ms() is None
    assert latency_bin(-1) == 0 and latency_bin(float("nan")) == 0 and latency_bin(1e12) == 99
    assert Tally().add(1, 0, [float("inf"), -5.0]).latency_count == 0
    with pytest.raises(ValueError, match="invalid counts"):
        Tally().add(1, 2)


def test_a_huge_histogram_is_thinned_in_proportion_for_the_test() -> None:
    tally = Tally(latency=((10, 3_000_000), (20, 1_000_000)))
    values = tally.values(limit=4000)
    assert len(values) == 4000 and values.count(bin_value(10)) == 3000
    assert len(Tally(latency=((10, 5),)).values(2.0)) == 5 and Tally(latency=((10, 5),)).values(2.0)[
        0
    ] == 2 * bin_value(10)


def test_the_state_round_trips_through_json_and_stays_small_however_long_the_bake() -> None:
    rng = random.Random(7)
    state = JudgeState(baseline_ids=("3",), started_at=datetime(2026, 11, 30, 1, 0, tzinfo=UTC))
    for _ in range(2000):  # 2,000 ticks of 500 requests each side
        lat = [rng.lognormvariate(3, 0.5) for _ in range(50)]
        state = replace(state, canary=state.canary.add(500, 3, lat), baseline=state.baseline.add(500, 2, lat))
    state = look(state, Thresholds(), 0.5)
    text = json.dumps(state.to_json(), separators=(",", ":"))
    assert len(text.encode("utf-16-le")) < 4096  # an Azure Tables string property holds 64 KiB
    assert JudgeState.from_json(json.loads(text)) == state


def test_thresholds_refuse_nonsense_with_every_problem_named() -> None:
    with pytest.raises(ValueError) as err:
        Thresholds(alpha=0, pass_alpha=1.5, error_margin=-0.1, latency_ratio=0.5, min_samples=0, marginal_p=2)
    for name in ("alpha", "pass_alpha", "error_margin", "latency_ratio", "min_samples", "marginal_p"):
        assert name in str(err.value)


def test_the_spending_function_spends_alpha_by_the_end_and_never_more() -> None:
    assert spent(0.05, 0) == 0 and spent(0.05, 1) == pytest.approx(0.05) and spent(0.05, 7) == pytest.approx(0.05)
    assert spent(0.05, 0.1) == pytest.approx(0.05 * math.log(1 + (math.e - 1) * 0.1))
    assert all(spent(0.05, a / 10) < spent(0.05, (a + 1) / 10) for a in range(10))


# --- verdicts -------------------------------------------------------------------------------------------


def _state(c: tuple[int, int], b: tuple[int, int], c_lat: list[float] = [], b_lat: list[float] = []) -> JudgeState:  # noqa: B006
    return JudgeState(baseline_ids=("9",), canary=Tally().add(*c, c_lat), baseline=Tally().add(*b, b_lat))


def test_a_canary_with_many_more_errors_fails_at_the_first_look() -> None:
    state = look(_state((500, 100), (500, 3)), Thresholds(), 0.1)
    assert state.verdict is Verdict.FAIL and "error rate 20.00% vs baseline 0.60%" in state.figures["why"]
    assert state.figures["errorRate"]["pFail"] < state.figures["failBoundary"]
    assert state.looks == 1 and state.spent_fail == pytest.approx(spent(0.05, 0.1))
    assert "errors 100/500 vs 3/500" in summary(state)


def test_a_canary_twice_as_slow_fails_on_latency() -> None:
    rng = random.Random(1)
    fast = [rng.lognormvariate(math.log(20), 0.3) for _ in range(200)]
    slow = [2 * rng.lognormvariate(math.log(20), 0.3) for _ in range(200)]
    state = look(_state((200, 0), (200, 0), slow, fast), Thresholds(), 0.1)
    assert state.verdict is Verdict.FAIL and "latency median" in state.figures["why"]
    assert state.figures["latency"]["medianRatio"] == pytest.approx(2, rel=0.2)
    assert "latency median" in summary(state)


def test_a_slowdown_within_the_allowed_ratio_does_not_fail() -> None:
    rng = random.Random(2)
    base = [rng.lognormvariate(math.log(20), 0.3) for _ in range(400)]
    canary = [1.1 * rng.lognormvariate(math.log(20), 0.3) for _ in range(400)]
    state = look(_state((400, 0), (400, 0), canary, base), Thresholds(latency_ratio=1.5), 1.0, final=True)
    assert state.verdict is Verdict.PASS


def test_a_clean_canary_with_plenty_of_traffic_passes_before_the_bake_ends() -> None:
    rng = random.Random(3)
    base = [rng.lognormvariate(math.log(20), 0.3) for _ in range(3000)]
    canary = [rng.lognormvariate(math.log(20), 0.3) for _ in range(3000)]
    state = look(_state((3000, 3), (3000, 3), canary, base), Thresholds(), 0.2)
    assert state.verdict is Verdict.PASS and "conclusively" in state.figures["why"]


def test_too_few_samples_is_pending_until_the_end_then_pass_when_nothing_leans_worse() -> None:
    state = _state((3, 0), (3, 0))
    assert look(state, Thresholds(), 0.5).verdict is Verdict.PENDING
    assert look(state, Thresholds(), 0.5, final=True).verdict is Verdict.PASS
    # Probes only and few of them: not enough for an early Pass however clean.
    assert look(_state((30, 0), (30, 0)), Thresholds(), 0.5).verdict is Verdict.PENDING


def test_a_canary_leaning_worse_without_conclusive_evidence_is_marginal_at_the_end() -> None:
    state = look(_state((40, 4), (40, 0)), Thresholds(), 1.0, final=True)
    assert state.verdict is Verdict.MARGINAL, state.figures
    assert "leaning worse" in state.figures["why"]
    assert 0.05 / 2 < state.figures["errorRate"]["pFail"] < 0.1
    # The same figures mid-bake are only pending; one error fewer leans too little (p 0.11 > 0.1): Pass.
    assert look(_state((40, 4), (40, 0)), Thresholds(), 0.5).verdict is Verdict.PENDING
    assert look(_state((40, 3), (40, 0)), Thresholds(), 1.0, final=True).verdict is Verdict.PASS
    # Two more errors are conclusive even at the end: Fail.
    assert look(_state((40, 6), (40, 0)), Thresholds(), 1.0, final=True).verdict is Verdict.FAIL


def test_a_look_spends_only_the_alpha_since_the_previous_one() -> None:
    once = look(_state((50, 0), (50, 0)), Thresholds(), 0.5)
    again = look(once, Thresholds(), 0.5)
    assert again.figures["failBoundary"] == 0 and again.figures["passBoundary"] == 0
    later = look(once, Thresholds(), 0.6)
    assert later.figures["failBoundary"] == pytest.approx((spent(0.05, 0.6) - spent(0.05, 0.5)) / 2, rel=1e-5)


# --- error rates, measured --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    looks: int  # the look that concluded (ticks into the bake)


def simulate_bake(
    rng: random.Random,
    *,
    canary_error: float,
    baseline_error: float = 0.01,
    slowdown: float = 1.0,
    requests: int = 100,
    looks: int = 10,
    thresholds: Thresholds | None = None,
) -> Outcome:
    """One bake of ``looks`` ticks with ``requests`` requests per tick and group (lognormal latencies)."""
    state = JudgeState(baseline_ids=("b",))
    for k in range(1, looks + 1):
        c_err = sum(rng.random() < canary_error for _ in range(requests))
        b_err = sum(rng.random() < baseline_error for _ in range(requests))
        c_lat = [slowdown * rng.lognormvariate(math.log(20), 0.4) for _ in range(requests - c_err)]
        b_lat = [rng.lognormvariate(math.log(20), 0.4) for _ in range(requests - b_err)]
        state = replace(
            state, canary=state.canary.add(requests, c_err, c_lat), baseline=state.baseline.add(requests, b_err, b_lat)
        )
        state = look(state, thresholds or Thresholds(), k / looks, final=k == looks)
        if state.verdict is not Verdict.PENDING:
            return Outcome(state.verdict, k)
    raise AssertionError("the final look always concludes")  # pragma: no cover


def test_the_false_alarm_rate_under_the_null_is_at_most_alpha() -> None:
    rng = random.Random(20261130)
    runs = 300
    outcomes = [simulate_bake(rng, canary_error=0.01) for _ in range(runs)]
    fails = sum(o.verdict is Verdict.FAIL for o in outcomes)
    assert fails / runs <= Thresholds().alpha, f"{fails} false Fails in {runs} good bakes"
    marginal = sum(o.verdict is Verdict.MARGINAL for o in outcomes)
    assert marginal / runs <= 0.1, f"{marginal} Marginal verdicts in {runs} good bakes"


def test_a_clearly_broken_canary_is_failed_at_the_first_look_and_a_slow_one_early() -> None:
    rng = random.Random(11)
    broken = [simulate_bake(rng, canary_error=0.2) for _ in range(50)]
    assert all(o.verdict is Verdict.FAIL and o.looks == 1 for o in broken)
    slow = [simulate_bake(rng, canary_error=0.01, slowdown=2.0) for _ in range(50)]
    assert all(o.verdict is Verdict.FAIL for o in slow)
    assert max(o.looks for o in slow) <= 2
    five_percent = [simulate_bake(rng, canary_error=0.05) for _ in range(50)]
    # 5% errors against 1% with a 1-point margin and 100 requests a tick: power about 85% (docs/safety.md).
    assert sum(o.verdict is Verdict.FAIL for o in five_percent) >= 40
    assert sum(o.verdict is Verdict.PASS for o in five_percent) <= 2


def test_a_good_canary_with_traffic_passes_before_the_bake_ends() -> None:
    rng = random.Random(12)
    good = [simulate_bake(rng, canary_error=0.001, baseline_error=0.001, requests=1000) for _ in range(30)]
    assert all(o.verdict is Verdict.PASS for o in good)
    assert sum(o.looks for o in good) / 30 < 10
