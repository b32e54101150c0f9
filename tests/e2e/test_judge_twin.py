"""The canary judge on the local twin, CI-sized: ``bench/judge.py`` with one good and one broken release.

Real nginx instances in bubblewrap serve every release's ``/healthz`` (the probe's path) with 200; the
broken release answers 500 to the application's traffic, which only the instances' nginx access logs show,
read by the function app through the emulator's Log Analytics query API. Only what is robust is asserted:
the good release passes the judge and succeeds, the broken one is failed by the judge during the bake and
rolled back. ``make bench-judge`` measures all the labels (docs/safety.md, "The judge on the twin").

Addresses: the balancer on 127.0.9.50, the instances from 127.0.95.1, the slow upstream on 127.0.95.250
(no other test uses them). Run it in a network namespace of its own: ``unshare -n bash -c 'ip link set lo
up; .venv/bin/python -m pytest tests/e2e/test_judge_twin.py'``.
"""

from __future__ import annotations

import shutil

import pytest

from bench.judge import BenchOptions, run

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.mark.timeout(150)
def test_the_judge_passes_a_good_release_and_fails_a_broken_one_on_the_twins_logs() -> None:
    if shutil.which("nginx") is None or shutil.which("bwrap") is None:
        pytest.fail("nginx and bubblewrap are needed: run `make setup`", pytrace=False)
    bake = 6
    results = run(BenchOptions(labels=("good", "broken"), runs=1, seed=7, bake_seconds=bake), say=lambda line: None)
    by_label = {r.label: r for r in results}
    good, broken = by_label["good"], by_label["broken"]
    assert (good.verdict, good.phase) == ("Pass", "Succeeded"), good
    assert (broken.verdict, broken.phase) == ("Fail", "RolledBack"), broken
    # The judge's Fail, during the bake (the probes of /healthz never failed), on the logs' error rate.
    assert broken.why.startswith("canary judged Fail: Fail: error rate"), broken.why
    assert broken.seconds is not None and broken.seconds < bake, broken
