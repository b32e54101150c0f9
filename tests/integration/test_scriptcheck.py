"""``bash -n`` as the release gate for script syntax (a real bash, no script is run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rollout.adapters.scriptcheck import BashSyntaxChecker

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.mark.parametrize("script", sorted(EXAMPLES.glob("*.sh")), ids=lambda p: p.name)
def test_the_example_releases_pass(script: Path) -> None:
    assert BashSyntaxChecker().problems(script.name, script.read_bytes()) is None


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            b"#!/bin/bash\nif true; then\n  echo hi\n",
            "install_nginx.v9.sh: line 4: syntax error: unexpected end of file",
        ),
        (b"#!/bin/bash\necho (\n", "install_nginx.v9.sh: line 2: syntax error near unexpected token"),
        (b"#!/bin/bash\nfi\n", "syntax error near unexpected token `fi'"),
    ],
)
def test_syntax_errors_are_named_with_the_line(content: bytes, expected: str) -> None:
    problem = BashSyntaxChecker().problems("install_nginx.v9.sh", content)
    assert problem is not None and problem.startswith("syntax error (bash -n): ") and expected in problem


def test_nothing_is_executed(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    assert BashSyntaxChecker().problems("x.v1.sh", f"touch {marker}\n".encode()) is None
    assert not marker.exists()


def test_without_bash_the_check_is_skipped_not_failed() -> None:
    checker = BashSyntaxChecker()
    checker.bash = None
    assert checker.problems("x.v1.sh", b"if then fi (((") is None
