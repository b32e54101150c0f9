"""``make demo ARGS="--scale-sets 3"``, run as a user runs it (a process, its output read): three scale sets of
real nginx instances, each behind its own balancer, in a group of two waves. v1 crosses wave 1 (the canary
scale set), the wave bake, then wave 2; a broken v2 halts at wave 1 and is rolled back only there.
Kept short: 2 instances per scale set, short bakes, a fast timer."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
V0, V1 = "'Welcome to nginx!'", "'Welcome to nginx on Azure VMSS!'"
ARGS = ["--scale-sets", "3", "--instances", "2", "--bake", "2", "--wave-bake", "2", "--tick", "0.5"]
ARGS += ["--upgrade-seconds", "0.3", "--lb-address", "127.0.9.20", "--address-base", "127.0.80.1"]


def line_of(lines: list[str], pattern: str, start: int = 0) -> int:
    """The index of the first line from ``start`` matching ``pattern`` (a regular expression)."""
    for index in range(start, len(lines)):
        if re.search(pattern, lines[index]):
            return index
    raise AssertionError(f"no line matches {pattern!r} after line {start}:\n" + "\n".join(lines))


def test_the_three_scale_set_demo_crosses_the_waves_and_halts_a_bad_release_at_wave_1() -> None:
    if shutil.which("nginx") is None or shutil.which("bwrap") is None:
        pytest.fail("nginx and bubblewrap are needed: run `make setup`", pytrace=False)
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "emulator.demo", *ARGS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    print(f"the demo took {time.monotonic() - began:.0f} s")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for n, name in enumerate(("canary-vmss", "web-vmss-2", "web-vmss-3"), start=20):
        line_of(lines, rf"load balancer  http://127\.0\.9\.{n}/ .* for {name}$")
        line_of(lines, rf"balancer of {name} \(http://127\.0\.9\.{n}/\) serves 6 x {V0}$")

    # v1: wave 1 (the canary scale set) succeeds, the wave bake passes, then wave 2 starts.
    v1 = line_of(lines, r"^=== 2\. Upload install_nginx\.v1\.sh")
    canary = line_of(lines, r"TargetStarted +install_nginx v1 started on canary-rg:canary-vmss \(wave 1\)", v1)
    # (the progress shows the group's trail first, then the targets' phases, of each look at the release)
    succeeded = line_of(lines, r"target +wave 1 canary-rg:canary-vmss: v1 Succeeded", canary)
    wave1 = line_of(lines, r"WaveSucceeded +wave 1 of 2 succeeded", canary)
    baked = line_of(lines, r"WaveBaking -> Running: wave 2 of 2 starting: the wave bake passed", wave1)
    assert succeeded < baked
    for name in ("web-vmss-2", "web-vmss-3"):
        assert line_of(lines, rf"TargetStarted +install_nginx v1 started on canary-rg:{name} \(wave 2\)", v1) > baked
        line_of(lines, rf"target +wave 2 canary-rg:{name}: v1 Succeeded", baked)
    line_of(lines, r"Running -> Succeeded: every wave succeeded: install_nginx v1 is out", baked)

    # v2 breaks nginx: the canary scale set rolls back; wave 2 never starts.
    v2 = line_of(lines, r"^=== 3\. Upload a broken v2")
    rolled_back = line_of(lines, r"target +wave 1 canary-rg:canary-vmss: v2 RolledBack", v2)
    halted = line_of(lines, r"Halting -> Halted: install_nginx v2 stopped at wave 1", v2)
    assert rolled_back > v2 and halted > v2
    line_of(
        lines, r"v2 was started on: canary-rg:canary-vmss; never on: canary-rg:web-vmss-2, canary-rg:web-vmss-3$", v2
    )
    assert not [line for line in lines[v2:] if re.search(r"v2 \w+ on canary-rg:web-vmss|wave 2 .*: v2", line)]

    summary = line_of(lines, r"^=== Summary")
    line_of(lines, r"group web install_nginx\.v1\.sh +Succeeded", summary)
    line_of(lines, r"group web install_nginx\.v2\.sh +Halted", summary)
    for wave, name in ((1, "canary-vmss"), (2, "web-vmss-2"), (2, "web-vmss-3")):
        pattern = rf"wave {wave} canary-rg:{name} +stable release: install_nginx\.v1\.sh; balancer serves 6 x {V1}$"
        line_of(lines, pattern, summary)
    line_of(lines, r"ARM reads: \d+, 0 answered 429", summary)
    assert lines[-1] == "everything stopped: Azurite, the ARM emulator, nginx instances, balancer, functions host."
