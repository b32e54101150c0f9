"""Rollout ids: the shape the HTTP routes accept is exactly the shape ``rollout_id_for`` makes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rollout.releases import (
    MAX_ROLLOUT_ID_CHARS,
    ROLLOUT_ID_RE,
    ReleaseName,
    parse_release_name,
    rejected_release,
    rollout_id_for,
    rollout_id_problem,
)

names = st.builds(
    lambda app, version, ext: f"{app}.v{version}.{ext}",
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}", fullmatch=True),
    st.one_of(st.integers(0, 999_999_999).map(str), st.from_regex(r"0{1,3}[0-9]{1,6}", fullmatch=True)),
    st.sampled_from(["sh", "image.json"]),
)


@settings(max_examples=500, derandomize=True, database=None)
@given(name=names, content=st.binary(max_size=64))
def test_every_id_the_service_makes_is_accepted(name: str, content: bytes) -> None:
    parsed = parse_release_name(name)
    assert isinstance(parsed, ReleaseName), parsed
    rollout_id = rollout_id_for(rejected_release(parsed, "https://x/init/" + name, content))
    assert rollout_id_problem(rollout_id) is None
    assert len(rollout_id) <= MAX_ROLLOUT_ID_CHARS


@settings(max_examples=500, derandomize=True, database=None)
@given(text=st.text(st.characters(exclude_categories=()), max_size=200))
def test_anything_else_is_refused_with_a_short_reason(text: str) -> None:
    problem = rollout_id_problem(text)
    if ROLLOUT_ID_RE.fullmatch(text):
        assert problem is None
    else:
        assert problem is not None and len(problem) < 600  # never echoes more than 40 characters


def test_the_issue_reproduction_and_lookalikes_are_refused() -> None:
    good = "install_nginx-v7-0123456789"
    assert rollout_id_problem(good) is None
    for bad in [
        "x" * 5000,
        good + "\n",
        good.upper(),
        good + "/pause",
        "a/b",
        "../etc",
        "install_nginx-v07-0123456789",
    ]:
        assert rollout_id_problem(bad) is not None, bad
    assert "5000 characters" in (rollout_id_problem("x" * 5000) or "")


def test_each_refusal_says_why_and_shows_at_most_40_characters_of_the_text() -> None:
    shape = "is not a rollout id (<app>-v<N>-<10 hex digits>, for example install_nginx-v7-0123456789)"
    assert rollout_id_problem("") == "the rollout id is empty"
    assert rollout_id_problem("a/b") == f"'a/b' {shape}"
    forty = "/" * 40
    assert rollout_id_problem(forty) == f"{forty!r} {shape}"
    assert rollout_id_problem(forty + "xy") == f"{forty + '...'!r} {shape}"
    assert rollout_id_problem("x" * 5000) == "the rollout id is 5000 characters long; rollout ids have at most 85"
