"""tools/mutation_score.py: the score `make mutation` fails on, and how equivalent mutants are matched."""

from __future__ import annotations

from collections import Counter

import pytest

from tools import mutation_score
from tools.mutation_score import Module, changed_lines, find_equivalent

DIFF = """--- rollout/machine.py
+++ rollout/machine.py
@@ -1,2 +1,2 @@
 def _num(instance_id: str) -> tuple[int, int, str]:
-    return (0, 1, "")
+    return (0, 1, "XXXX")"""


def test_the_fingerprint_is_the_changed_lines_without_the_headers() -> None:
    assert changed_lines(DIFF) == ['-    return (0, 1, "")', '+    return (0, 1, "XXXX")']


def test_the_score_leaves_equivalent_mutants_out_and_counts_timeouts_as_killed() -> None:
    m = Module("rollout/x.py", Counter({"killed": 85, "timeout": 5, "survived": 10}), equivalent=4)
    assert (m.total, m.killed, m.scored) == (100, 90, 96)
    assert m.score == pytest.approx(93.75)


def test_an_entry_is_found_again_after_its_mutant_was_renumbered(monkeypatch: pytest.MonkeyPatch) -> None:
    diffs = {"m.x_f__mutmut_3": "-a\n+b", "m.x_f__mutmut_4": "-a\n+c", "m.x_g__mutmut_1": "-a\n+c"}
    monkeypatch.setattr(mutation_score, "mutant_diff", lambda name, path: diffs[name])
    module = Module("m.py", survivors=list(diffs))
    entry = {"mutant": "m.x_f__mutmut_2", "change": ["-a", "+c"]}
    assert find_equivalent(module, entry, exclude=set()) == "m.x_f__mutmut_4"  # same function, same change
    assert find_equivalent(module, {**entry, "mutant": "m.x_f__mutmut_4"}, exclude=set()) == "m.x_f__mutmut_4"
    assert find_equivalent(module, {**entry, "change": ["-a", "+z"]}, exclude=set()) is None  # killed or gone
    assert find_equivalent(module, entry, exclude={"m.x_f__mutmut_4"}) is None  # one entry, one mutant
