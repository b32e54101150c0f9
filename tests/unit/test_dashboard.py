"""The dashboard's pure parts: the fleet map (release, in flight, canary per instance), the data block that
cannot break out of its element, the CSP, the refresh bound, and the refusal page."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from rollout.dashboard import (
    content_security_policy,
    error_page,
    fleet_map,
    refresh_seconds,
    render_page,
    script_json,
)
from rollout.model import Phase
from tests.unit.test_machine import BAD, NEW, OLD, I, fleet, rollout

HOSTILE = """</script><script>alert(1)</script><!--<img src=x onerror=alert(2)>"'&amp;\u2028"""


class Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = True
            self.script_text.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text[-1] += data


def by_id(view: dict[str, object]) -> dict[str, dict[str, object]]:
    return {i["instanceId"]: i for i in view["instances"]}  # type: ignore[attr-defined, index]


def test_during_the_canary_it_is_badged_in_flight_and_the_rest_run_the_stable_release() -> None:
    r = rollout(Phase.CANARY, canary_ids=("0",), batch_ids=("0",), upgraded_ids=("0",))
    view = fleet_map(fleet(I("0", state="Updating"), I("1", latest=False), I("2")), r, "install_nginx.v0.sh")
    tiles = by_id(view)
    assert tiles["0"]["canary"] is True and tiles["0"]["inFlight"] == "canary: upgrading to install_nginx.v1.sh"
    assert tiles["0"]["health"] == "Updating"
    assert [tiles[i]["release"] for i in ("1", "2")] == ["install_nginx.v0.sh"] * 2
    assert tiles["1"]["inFlight"] is None and tiles["1"]["canary"] is False


def test_a_batch_going_out_is_in_flight_until_it_runs_the_release_and_is_healthy() -> None:
    r = rollout(Phase.PROMOTING, canary_ids=("0",), batch_ids=("1", "2"), batch_number=1, upgraded_ids=("0", "1", "2"))
    view = fleet_map(fleet(I("0", latest=True), I("1", latest=True), I("2", latest=True, probe=BAD), I("3")), r, None)
    tiles = by_id(view)
    assert tiles["0"]["inFlight"] is None and tiles["0"]["release"] == "install_nginx.v1.sh"
    assert tiles["1"]["inFlight"] is None  # landed and healthy
    assert tiles["2"]["inFlight"] == "batch 1: upgrading to install_nginx.v1.sh" and tiles["2"]["health"] == "Unhealthy"
    assert tiles["3"]["release"] == "the model before any release"
    assert view["summary"] == {"instances": 4, "onRelease": 3, "healthy": 3, "unhealthy": 1, "updating": 0, "failed": 0}


def test_during_a_rollback_the_model_is_the_baseline_and_instances_still_on_the_release_are_to_move_back() -> None:
    r = rollout(Phase.ROLLING_BACK, canary_ids=("0",), upgraded_ids=("0", "1"), rollback_ids=("0",))
    view = fleet_map(
        fleet(I("0", latest=True), I("1", latest=False), I("2", latest=True, state="Updating"), model=OLD),
        r,
        "install_nginx.v0.sh",
    )
    tiles = by_id(view)
    assert tiles["0"]["release"] == "install_nginx.v0.sh" and tiles["0"]["inFlight"] is None
    assert tiles["1"]["release"] == "install_nginx.v1.sh"
    assert tiles["1"]["inFlight"] == "to be moved back to the baseline"
    assert tiles["2"]["inFlight"] == "moving back to the baseline"
    reimaging = fleet_map(fleet(I("0", latest=True), model=OLD), r.evolve(reimage_pending=("0",)), None)
    assert by_id(reimaging)["0"]["inFlight"] == "reimaging with the baseline"


def test_an_ended_rollout_puts_nothing_in_flight_and_without_one_the_stable_release_is_shown() -> None:
    done = rollout(Phase.SUCCEEDED, canary_ids=("0",), batch_ids=("1",), upgraded_ids=("0", "1"))
    tiles = by_id(fleet_map(fleet(I("0", latest=True), I("1", latest=True, probe=BAD)), done, "x.v0.sh"))
    assert {t["inFlight"] for t in tiles.values()} == {None}
    assert {t["release"] for t in tiles.values()} == {"install_nginx.v1.sh"}
    none = by_id(fleet_map(fleet(I("0", latest=True), I("1"), model=NEW), None, "install_nginx.v1.sh"))
    assert none["0"]["release"] == "install_nginx.v1.sh" and none["1"]["release"] == "an older model"


def test_the_data_block_cannot_close_its_element_and_reads_back_whole() -> None:
    data = {"release": HOSTILE, "nested": [{"reason": HOSTILE}], "n": 3}
    text = script_json(data)
    assert not set(text) & {"<", ">", "&", "\u2028"}
    assert json.loads(text) == data


def test_the_page_has_two_scripts_the_data_inert_and_the_code_nonced_and_no_hostile_text_in_markup() -> None:
    data = {"releases": [{"release": HOSTILE, "reason": HOSTILE}], "timeline": [{"message": HOSTILE}]}
    page = render_page(data, "abc_DEF-123", refresh=7)
    parser = Elements()
    parser.feed(page)
    scripts = [attrs for tag, attrs in parser.tags if tag == "script"]
    data_block = {"type": "application/json", "id": "dashboard-data", "data-refresh": "7"}
    assert scripts == [data_block, {"nonce": "abc_DEF-123"}]
    assert json.loads(parser.script_text[0]) == data
    assert not [tag for tag, _ in parser.tags if tag in ("img", "iframe", "object", "embed", "link", "a", "form")]
    assert HOSTILE not in page and page.count("<script") == 2 and page.count("</script") == 2
    assert page.count("<!--") == 0
    assert "innerHTML" not in page and "eval(" not in page and "document.write" not in page
    for bad in ("x' 'unsafe-inline", "nonceé12345", "short"):
        with pytest.raises(ValueError):
            render_page(data, bad)


def test_the_csp_allows_only_the_nonce_and_the_app_itself() -> None:
    csp = dict(part.split(" ", 1) for part in content_security_policy("n0nce").split("; "))
    assert csp["default-src"] == "'none'" and csp["script-src"] == "'nonce-n0nce'"
    assert csp["style-src"] == "'nonce-n0nce'" and csp["connect-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'" and csp["base-uri"] == "'none'" and csp["form-action"] == "'none'"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, 5), ("", 5), ("2", 2), ("0", 1), ("301", 300), ("99999", 5), ("-3", 5), ("1e3", 5), ("٣", 5)],
)
def test_refresh_seconds_are_bounded(value: str | None, seconds: int) -> None:
    assert refresh_seconds(value) == seconds


def test_a_refusal_page_escapes_its_message() -> None:
    page = error_page(403, HOSTILE, "n0nce-123")
    assert "HTTP 403" in page and "<script>alert" not in page and "&lt;/script&gt;" in page
