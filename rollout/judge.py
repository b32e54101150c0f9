"""The canary judge: the canary against an equal number of baseline instances, with statistics. Pure.

During the bake every tick adds what the canary and the baseline instances did since the last one to
two tallies (``Tally``: requests, errors and a latency histogram; sufficient statistics, a few hundred
bytes however long the bake), and ``look`` judges the tallies so far:

- error rate: a two-proportion z test of "the canary's error rate exceeds the baseline's by more than
  the allowed margin" (``error_rate_test``);
- latency: a one-sided Mann-Whitney U test of "the canary's latencies are stochastically greater than
  the baseline's times the allowed ratio" (``latency_test``, ``scipy.stats.mannwhitneyu``).

Sequential, not fixed: the tests are repeated at every tick, so each look may only spend part of the
false-alarm rate. The share a look may spend follows the Lan-DeMets Pocock-type spending function
``alpha * ln(1 + (e - 1) * t)`` of the bake's elapsed fraction ``t``; a look rejects when its p-value is
at most the alpha spent since the previous look. By the union bound the chance of any false Fail over
the whole bake is at most the sum of the increments, ``alpha`` (docs/safety.md, "The canary judge").
The same rule with ``pass_alpha`` on the opposite one-sided tests passes a clearly good canary before
the bake ends. At the end of the bake, neither conclusive: ``Marginal`` when the figures lean to a
degradation beyond the allowed effect (``marginal_p``), else ``Pass``.

scipy is imported inside the tests only: ``import scipy.stats`` takes most of a second, and cold
starts of the function app must not pay for it (only a bake does).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

# Latency histogram: bin i holds latencies in [LOW * BASE**i, LOW * BASE**(i+1)) ms. Bins 19% wide
# (2**0.25): the median of a bin's values is within 9.5% of the value we give them (its geometric middle).
LATENCY_LOW_MS = 0.1
LATENCY_BASE = 2**0.25
LATENCY_BINS = 100  # up to 0.1 * 2**25 ms (about 56 minutes); anything slower lands in the last bin


class Verdict(str, enum.Enum):
    PASS = "Pass"  # conclusive: the canary is within the allowed effect on every metric (or the bake ended clean)
    MARGINAL = "Marginal"  # the bake ended leaning to a degradation, without conclusive evidence: a human decides
    FAIL = "Fail"  # conclusive: the canary is worse than the allowed effect on some metric
    PENDING = "Pending"  # not conclusive yet; the bake goes on


def latency_bin(ms: float) -> int:
    if not ms > LATENCY_LOW_MS:  # also NaN
        return 0
    return min(LATENCY_BINS - 1, int(math.log(ms / LATENCY_LOW_MS) / math.log(LATENCY_BASE)))


def bin_value(index: int) -> float:
    """The latency a bin stands for: its geometric middle."""
    return float(LATENCY_LOW_MS * LATENCY_BASE ** (index + 0.5))


@dataclass(frozen=True)
class Tally:
    """Sufficient statistics of one group (the canary, or the baseline) over the bake so far."""

    requests: int = 0
    errors: int = 0
    latency: tuple[tuple[int, int], ...] = ()  # (bin, count), sorted by bin; only bins with a count

    @property
    def latency_count(self) -> int:
        return sum(c for _, c in self.latency)

    def add(self, requests: int, errors: int, latencies_ms: Iterable[float] = ()) -> Tally:
        if requests < 0 or errors < 0 or errors > requests:
            raise ValueError(f"invalid counts: {errors} errors of {requests} requests")
        bins = dict(self.latency)
        for ms in latencies_ms:
            if math.isfinite(ms) and ms >= 0:
                b = latency_bin(ms)
                bins[b] = bins.get(b, 0) + 1
        return Tally(self.requests + requests, self.errors + errors, tuple(sorted(bins.items())))

    def values(self, scale: float = 1.0, limit: int = 200_000) -> list[float]:
        """The latencies as the histogram keeps them (each bin's value, as many times as it counted). Over
        ``limit`` values the counts are thinned in proportion (the same shape, fewer samples: p-values
        only grow, so no verdict becomes easier), which bounds a look's time and memory."""
        total = self.latency_count
        shrink = 1.0 if total <= limit else limit / total
        return [bin_value(b) * scale for b, c in self.latency for _ in range(round(c * shrink))]

    def median_ms(self) -> float | None:
        total = self.latency_count
        if not total:
            return None
        seen = 0
        for b, c in self.latency:
            seen += c
            if seen * 2 >= total:
                return bin_value(b)
        return None  # pragma: no cover - unreachable: the loop covers every count

    def to_json(self) -> dict[str, Any]:
        return {"n": self.requests, "e": self.errors, "l": [[b, c] for b, c in self.latency]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Tally:
        latency = tuple((int(b), int(c)) for b, c in data.get("l", []))
        return cls(int(data.get("n", 0)), int(data.get("e", 0)), latency)


@dataclass(frozen=True)
class Thresholds:
    """The judge's policy (``RolloutPolicy``'s ``judge_*`` knobs)."""

    alpha: float = 0.05  # false Fail rate over a whole bake (both metrics together)
    pass_alpha: float = 0.05  # chance of an early Pass of a canary worse than the allowed effect
    error_margin: float = 0.01  # allowed increase of the error rate (absolute: 0.01 = one percentage point)
    latency_ratio: float = 1.2  # allowed slowdown: canary latencies up to this many times the baseline's
    min_samples: int = 10  # per group and metric before that metric is tested
    marginal_p: float = 0.1  # at the end of the bake: nominal p below this with the estimate beyond the margin
    latency_min_delta_ms: float = 0.0  # the least slowdown in ms that counts, whatever the ratio

    def __post_init__(self) -> None:
        problems = []
        for name in ("alpha", "pass_alpha", "marginal_p"):
            value = getattr(self, name)
            if not 0 < value < 1:
                problems.append(f"{name} must be between 0 and 1 (exclusive), not {value!r}")
        if not 0 <= self.error_margin < 1:
            problems.append(f"error_margin must be at least 0 and below 1, not {self.error_margin!r}")
        if not 0 <= self.latency_min_delta_ms <= 3_600_000:
            problems.append(f"latency_min_delta_ms must be between 0 and 3600000, not {self.latency_min_delta_ms!r}")
        if not 1 <= self.latency_ratio <= 100:
            problems.append(f"latency_ratio must be between 1 and 100, not {self.latency_ratio!r}")
        if self.min_samples < 1:
            problems.append(f"min_samples must be at least 1, not {self.min_samples!r}")
        if problems:
            raise ValueError("; ".join(problems))


def spent(alpha: float, fraction: float) -> float:
    """Lan-DeMets Pocock-type spending function: the share of ``alpha`` spendable by ``fraction`` of the bake."""
    t = min(1.0, max(0.0, fraction))
    return alpha * math.log(1 + (math.e - 1) * t)


# --- the tests --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZTest:
    z: float
    p_value: float


def _norm_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z (math.erfc: no scipy needed)."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def two_proportion_z(x1: int, n1: int, x2: int, n2: int, alternative: str = "two-sided") -> ZTest:
    """The classic pooled two-proportion z test of H0: p1 = p2 (alternative 'two-sided', 'greater': p1 > p2,
    'less': p1 < p2)."""
    if n1 <= 0 or n2 <= 0 or not 0 <= x1 <= n1 or not 0 <= x2 <= n2:
        raise ValueError(f"invalid counts {x1}/{n1}, {x2}/{n2}")
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    diff = x1 / n1 - x2 / n2
    z = 0.0 if se == 0 else diff / se
    return ZTest(z, _p_from_z(z, alternative))


def _p_from_z(z: float, alternative: str) -> float:
    if alternative == "greater":
        return _norm_sf(z)
    if alternative == "less":
        return _norm_sf(-z)
    if alternative == "two-sided":
        return min(1.0, 2 * _norm_sf(abs(z)))
    raise ValueError(f"alternative must be 'two-sided', 'greater' or 'less', not {alternative!r}")


def error_rate_test(canary: Tally, baseline: Tally, margin: float) -> ZTest:
    """z of H0: p_canary - p_baseline <= margin (large z: the canary is worse than allowed).

    Agresti-Caffo adjusted Wald statistic (one error and one success added to each group; Agresti & Caffo
    2000, "Simple and effective confidence intervals for proportions and differences of proportions result
    from adding two successes and two failures", The American Statistician 54(4)): defined with zero errors
    on both sides, where the plain Wald statistic divides by zero. ``p_value`` is the one-sided p of the
    Fail direction; the Pass direction's is ``1 - p_value``."""
    pc = (canary.errors + 1) / (canary.requests + 2)
    pb = (baseline.errors + 1) / (baseline.requests + 2)
    se = math.sqrt(pc * (1 - pc) / (canary.requests + 2) + pb * (1 - pb) / (baseline.requests + 2))
    z = (pc - pb - margin) / se
    return ZTest(z, _norm_sf(z))


@dataclass(frozen=True)
class UTest:
    u: float  # U of the canary
    p_greater: float  # H1: canary stochastically greater than the (scaled) baseline
    p_less: float  # H1: canary stochastically less than the (scaled) baseline


def mann_whitney(x: Sequence[float], y: Sequence[float]) -> UTest:
    """Both one-sided Mann-Whitney U tests of x against y (normal approximation with tie correction and
    continuity correction: ``scipy.stats.mannwhitneyu(method="asymptotic")``)."""
    # Lazy: scipy.stats takes most of a second to import. (scipy ships no type stubs.)
    from scipy.stats import mannwhitneyu  # type: ignore[import-untyped]

    greater = mannwhitneyu(x, y, alternative="greater", method="asymptotic")
    less = mannwhitneyu(x, y, alternative="less", method="asymptotic")
    # Every value tied (no spread at all): scipy answers NaN; that is no evidence either way.
    p_greater, p_less = (float(p) if math.isfinite(float(p)) else 1.0 for p in (greater.pvalue, less.pvalue))
    return UTest(float(greater.statistic), p_greater, p_less)


def latency_test(canary: Tally, baseline: Tally, ratio: float, min_delta_ms: float = 0.0) -> UTest:
    """Canary latencies against the baseline's times ``ratio`` plus ``min_delta_ms``: ``p_greater`` small
    means the canary is slower than allowed; ``p_less`` small means it is within the allowed slowdown.
    The absolute floor keeps loopback-fast fleets (1 ms against 3 ms) from counting as slower."""
    return mann_whitney(canary.values(), [v + min_delta_ms for v in baseline.values(ratio)])


# --- the state across ticks, and one look --------------------------------------------------------------


@dataclass(frozen=True)
class JudgeState:
    """What the judge keeps between ticks, in the rollout record (``Rollout.judge``): a few hundred bytes."""

    baseline_ids: tuple[str, ...] = ()  # the baseline instances compared with the canary
    started_at: datetime | None = None  # when this judgement started (the bake's elapsed fraction counts from it)
    canary: Tally = field(default_factory=Tally)
    baseline: Tally = field(default_factory=Tally)
    looks: int = 0
    spent_fail: float = 0.0  # alpha spent on Fail so far
    spent_pass: float = 0.0  # pass_alpha spent on an early Pass so far
    verdict: Verdict = Verdict.PENDING
    figures: Mapping[str, Any] = field(default_factory=dict)  # of the last look

    def to_json(self) -> dict[str, Any]:
        return {
            "b": list(self.baseline_ids),
            "s": None if self.started_at is None else self.started_at.isoformat(),
            "c": self.canary.to_json(),
            "r": self.baseline.to_json(),
            "k": self.looks,
            "sf": self.spent_fail,
            "sp": self.spent_pass,
            "v": self.verdict.value,
            "f": dict(self.figures),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JudgeState:
        return cls(
            baseline_ids=tuple(str(i) for i in data.get("b", [])),
            started_at=None if not data.get("s") else datetime.fromisoformat(str(data["s"])),
            canary=Tally.from_json(data.get("c", {})),
            baseline=Tally.from_json(data.get("r", {})),
            looks=int(data.get("k", 0)),
            spent_fail=float(data.get("sf", 0.0)),
            spent_pass=float(data.get("sp", 0.0)),
            verdict=Verdict(data.get("v", Verdict.PENDING.value)),
            figures=dict(data.get("f", {})),
        )


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else float(f"{value:.{digits}g}")


def look(state: JudgeState, thresholds: Thresholds, fraction: float, *, final: bool = False) -> JudgeState:
    """Judge the tallies so far at ``fraction`` (elapsed share of the bake, 0..1). ``final``: the bake is
    over, so the verdict is Pass, Marginal or Fail, never Pending."""
    t = min(1.0, max(0.0, fraction))
    if final:
        t = 1.0
    fail_budget = max(0.0, spent(thresholds.alpha, t) - state.spent_fail)
    pass_budget = max(0.0, spent(thresholds.pass_alpha, t) - state.spent_pass)
    per_metric = fail_budget / 2  # Bonferroni over the two metrics
    c, b = state.canary, state.baseline
    figures: dict[str, Any] = {
        "look": state.looks + 1,
        "fraction": _round(t, 4),
        "failBoundary": _round(per_metric),
        "passBoundary": _round(pass_budget),
        "canary": {"requests": c.requests, "errors": c.errors, "latencies": c.latency_count},
        "baseline": {"requests": b.requests, "errors": b.errors, "latencies": b.latency_count},
    }
    fails: list[str] = []
    leaning: list[str] = []
    passes: list[bool] = []
    if c.requests >= thresholds.min_samples and b.requests >= thresholds.min_samples:
        err = error_rate_test(c, b, thresholds.error_margin)
        rate_c, rate_b = c.errors / c.requests, b.errors / b.requests
        figures["errorRate"] = {
            "canary": _round(rate_c),
            "baseline": _round(rate_b),
            "difference": _round(rate_c - rate_b),
            "allowed": thresholds.error_margin,
            "z": _round(err.z),
            "pFail": _round(err.p_value),
            "pPass": _round(1 - err.p_value),
        }
        if err.p_value <= per_metric:
            fails.append(
                f"error rate {rate_c:.2%} vs baseline {rate_b:.2%} (more than {thresholds.error_margin:.2%} higher, "
                f"p={err.p_value:.2g} <= {per_metric:.2g})"
            )
        elif rate_c - rate_b > thresholds.error_margin and err.p_value < thresholds.marginal_p:
            leaning.append(f"error rate {rate_c:.2%} vs baseline {rate_b:.2%} (p={err.p_value:.2g})")
        passes.append(1 - err.p_value <= pass_budget)
    else:
        passes.append(False)  # no early Pass without the error rate
    if c.latency_count >= thresholds.min_samples and b.latency_count >= thresholds.min_samples:
        lat = latency_test(c, b, thresholds.latency_ratio, thresholds.latency_min_delta_ms)
        med_c, med_b = c.median_ms(), b.median_ms()
        ratio = None if not med_c or not med_b else med_c / med_b
        figures["latency"] = {
            "canaryMedianMs": _round(med_c, 4),
            "baselineMedianMs": _round(med_b, 4),
            "medianRatio": _round(ratio, 4),
            "allowedRatio": thresholds.latency_ratio,
            "allowedDeltaMs": thresholds.latency_min_delta_ms,
            "u": _round(lat.u),
            "pFail": _round(lat.p_greater),
            "pPass": _round(lat.p_less),
        }
        if lat.p_greater <= per_metric:
            fails.append(
                f"latency median {med_c:.3g} ms vs baseline {med_b:.3g} ms (slower than {thresholds.latency_ratio:g}x, "
                f"p={lat.p_greater:.2g} <= {per_metric:.2g})"
            )
        elif (
            med_c is not None
            and med_b is not None
            and med_c > med_b * thresholds.latency_ratio + thresholds.latency_min_delta_ms
            and lat.p_greater < thresholds.marginal_p
        ):
            leaning.append(f"latency median {med_c:.3g} ms vs baseline {med_b:.3g} ms (p={lat.p_greater:.2g})")
        passes.append(lat.p_less <= pass_budget)
    if fails:
        verdict, why = Verdict.FAIL, "; ".join(fails)
    elif final and leaning:
        verdict, why = Verdict.MARGINAL, "leaning worse, not conclusive: " + "; ".join(leaning)
    elif final:
        verdict, why = Verdict.PASS, "no evidence of a degradation beyond the allowed effect"
    elif all(passes):
        verdict, why = Verdict.PASS, "within the allowed effect on every metric, conclusively"
    else:
        verdict, why = Verdict.PENDING, "not conclusive yet"
    figures["verdict"] = verdict.value
    figures["why"] = why
    return replace(
        state,
        looks=state.looks + 1,
        spent_fail=spent(thresholds.alpha, t),
        spent_pass=spent(thresholds.pass_alpha, t),
        verdict=verdict,
        figures=figures,
    )


def summary(state: JudgeState) -> str:
    """One line with the verdict and its figures, for reasons, events and notifications."""
    f = state.figures
    parts = [f"{state.verdict.value}: {f.get('why', '')}"]
    err = f.get("errorRate")
    if isinstance(err, Mapping):
        parts.append(
            f"errors {state.canary.errors}/{state.canary.requests} vs {state.baseline.errors}/{state.baseline.requests}"
            f" (z={err.get('z')}, p={err.get('pFail')})"
        )
    lat = f.get("latency")
    if isinstance(lat, Mapping):
        parts.append(
            f"latency median {lat.get('canaryMedianMs')} vs {lat.get('baselineMedianMs')} ms (p={lat.get('pFail')})"
        )
    parts.append(f"look {f.get('look')}, {float(f.get('fraction') or 0):.0%} of the bake")
    return "; ".join(parts)
