"""The mutation score of the pure core, per module, from the results `mutmut run` left in mutants/.

    python -m tools.mutation_score [--min 90] [--equivalents docs/mutation-equivalents.json] [--survivors]

Score = killed / (mutants - equivalent), where killed counts what mutmut reports as killed, timed out or
caught by the type checker. A surviving mutant listed in the equivalents file is not counted (it cannot
be killed: it behaves like the original). Each entry holds the mutant's name and the lines it changes
(from `mutmut show`). mutmut numbers mutants by their position in a function, so after an edit the entry
is matched again by its change among the survivors of the same function; an entry whose change no
survivor makes any more is reported and not counted (a test kills it now, or the code changed).

Exits 1 when a module or the total is under the minimum, or when a mutant was not run; 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KILLED = {"killed", "timeout", "caught by type check"}


@dataclass
class Module:
    path: str
    counts: Counter[str] = field(default_factory=Counter)
    equivalent: int = 0
    survivors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def killed(self) -> int:
        return sum(n for status, n in self.counts.items() if status in KILLED)

    @property
    def scored(self) -> int:
        return self.total - self.equivalent

    @property
    def score(self) -> float:
        return 100.0 * self.killed / self.scored if self.scored else 100.0


def _status(exit_code: int | None) -> str:
    from mutmut.stats import status_by_exit_code  # mutmut's own reading of its exit codes

    return str(status_by_exit_code[exit_code])


def changed_lines(diff: str) -> list[str]:
    """The lines a mutant removes and adds, without the diff's headers: its fingerprint."""
    return [line.rstrip() for line in diff.splitlines() if line[:1] in "-+" and not line.startswith(("---", "+++"))]


def mutant_diff(name: str, path: str) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    return str(get_diff_for_mutant(name, path=path))


def _function(mutant: str) -> str:
    return mutant.rpartition("__mutmut_")[0]


def find_equivalent(module: Module, entry: dict[str, Any], exclude: set[str]) -> str | None:
    """The surviving mutant an equivalents entry describes: the named one if it still makes the recorded
    change, else a survivor of the same function that makes it (mutmut numbers mutants by position, so
    an edit elsewhere in the function renumbers them). None when no survivor makes that change."""
    name, change = entry["mutant"], entry["change"]
    if name in module.survivors and changed_lines(mutant_diff(name, module.path)) == change:
        return name
    for other in module.survivors:
        same_function = other not in exclude and _function(other) == _function(name)
        if same_function and changed_lines(mutant_diff(other, module.path)) == change:
            return other
    return None


def load_modules() -> list[Module]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    modules = []
    for path in config["only_mutate"]:
        module = Module(path)
        meta = ROOT / "mutants" / (path + ".meta")
        if meta.exists():
            for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
                status = _status(code)
                module.counts[status] += 1
                if status not in KILLED:
                    module.survivors.append(name)
        modules.append(module)
    return modules


# killed includes the timeouts; survived is every mutant neither killed nor equivalent ("no tests" included).
HEADINGS = ("mutants", "killed", "timeout", "equiv", "survived", "score")


def row(m: Module) -> str:
    values = (m.total, m.killed, m.counts["timeout"], m.equivalent, len(m.survivors))
    return f"{m.path:24}" + "".join(f" {v:8}" for v in values) + f" {m.score:7.1f}%"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--min", type=float, default=90.0, help="the lowest acceptable score, in percent")
    parser.add_argument("--equivalents", type=Path, default=ROOT / "docs" / "mutation-equivalents.json")
    parser.add_argument(
        "--survivors", action="store_true", help="list every mutant that is neither killed nor equivalent"
    )
    args = parser.parse_args(argv)

    os.chdir(ROOT)  # mutmut reads pyproject.toml and mutants/ from the working directory
    modules = load_modules()
    entries = json.loads(args.equivalents.read_text()) if args.equivalents.exists() else []
    by_path = {m.path: m for m in modules}
    problems: list[str] = []
    equivalent: set[str] = set()
    for entry in entries:
        module = by_path.get(entry["module"])
        found = module and find_equivalent(module, entry, exclude=equivalent)
        if not found:
            # Killed now (a test got better), or the mutation is gone from the code: obsolete, not counted.
            print(
                f"note: {entry['mutant']} ({' / '.join(entry['change'])}) did not survive: drop or re-check the entry"
            )
            continue
        if found != entry["mutant"]:
            print(f"note: {entry['mutant']} is now {found} (the same change, renumbered)")
        assert module is not None
        equivalent.add(found)
        module.equivalent += 1

    print(f"{'module':24}" + "".join(f" {h:>8}" for h in HEADINGS))
    total = Module("total")
    for m in modules:
        survived = [n for n in m.survivors if n not in equivalent]
        m.survivors = survived
        if m.counts.get("not checked"):
            problems.append(f"{m.path}: {m.counts['not checked']} mutant(s) not run")
        if not m.total:
            problems.append(f"{m.path}: no results in mutants/ (run `make mutation`)")
        print(row(m))
        total.counts.update(m.counts)
        total.equivalent += m.equivalent
        total.survivors += survived
        if m.score < args.min:
            problems.append(f"{m.path}: score {m.score:.1f}% is under {args.min:g}%")
    print(row(total))
    if total.score < args.min:
        problems.append(f"total: score {total.score:.1f}% is under {args.min:g}%")
    if args.survivors:
        for name in total.survivors:
            print(f"  survived: {name}  (mutmut show '{name}')")
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
