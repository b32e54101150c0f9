"""The canary judge's error rates and time to verdict, measured by simulation (seeded): the figures
docs/safety.md, "The canary judge", quotes. Run: ``.venv/bin/python -m tests.judge_figures [runs]``."""

from __future__ import annotations

import random
import sys
from collections import Counter

from rollout.judge import Verdict
from tests.unit.test_judge import simulate_bake

CASES = {
    "good (1% errors both, same latency)": {"canary_error": 0.01},
    "broken (20% errors)": {"canary_error": 0.2},
    "5% errors (vs 1%)": {"canary_error": 0.05},
    "slow by 2x": {"canary_error": 0.01, "slowdown": 2.0},
    "slow by 1.3x (allowed 1.2x)": {"canary_error": 0.01, "slowdown": 1.3},
    "good, 1,000 requests a tick": {"canary_error": 0.001, "baseline_error": 0.001, "requests": 1000},
}


def main(runs: int) -> None:
    print(f"{runs} bakes per case, 10 looks, 100 requests per tick and group unless said, seed 20261130")
    print("| case | Pass | Marginal | Fail | mean looks to the verdict |")  # looks: bake ticks, 1 = the first
    print("|---|---|---|---|---|")
    for name, kwargs in CASES.items():
        rng = random.Random(20261130)
        outcomes = [simulate_bake(rng, **kwargs) for _ in range(runs)]  # type: ignore[arg-type]
        counts = Counter(o.verdict for o in outcomes)
        mean = sum(o.looks for o in outcomes) / runs
        verdicts = (Verdict.PASS, Verdict.MARGINAL, Verdict.FAIL)
        cells = " | ".join(f"{counts[v]} ({counts[v] / runs:.2%})" for v in verdicts)
        print(f"| {name} | {cells} | {mean:.2f} |", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
