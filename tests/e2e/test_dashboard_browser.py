"""The dashboard (``GET /api/dashboard``) in headless Chromium, driven by Selenium, against the local twin.

The page is opened once; everything after that is the page updating itself (a marker set in the window at
the start must still be there: no reload). It shows the canary, a batch going out, the rollback of the
walkthrough's broken v2, and an operator's hostile abort reason as plain text (nothing in it runs). The
browser's own network log shows that the page's refreshes never carry the function key in a URL.

Debian's ``chromium`` and ``chromium-driver`` (``make setup`` installs them). Without them the test is
skipped on a developer's machine and fails in CI (``CI=true``), where it must run.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from emulator.twin import EXAMPLES, Twin, TwinOptions, local_twin
from rollout.dashboard import new_nonce, page_headers, render_page

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
VMSS_KEY = "canary-rg:canary-vmss"
V1, V2, V3 = "install_nginx.v1.sh", "install_nginx.v2.sh", "install_nginx.v3.sh"
# A reason an operator may type (the API takes any printable text up to 500 characters): markup and quotes.
HOSTILE = """<script>window.__pwned="script"</script><img src=x onerror="window.__pwned='img'">"'&amp;</textarea>"""
SCREENSHOTS = os.environ.get("DASHBOARD_SCREENSHOTS")  # a folder: save the screenshots there too


def _browser_missing() -> str | None:
    missing = [name for name in ("chromium", "chromedriver") if not Path(globals()[name.upper()]).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    return ", ".join(missing) or None


@pytest.fixture
def browser() -> Iterator[Any]:
    missing = _browser_missing()
    if missing:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must run the dashboard's browser test, but {missing} is missing: `make setup`")
        pytest.skip(f"{missing} not installed (Debian chromium and chromium-driver; `make setup` installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1360,1500",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def twin() -> Iterator[Twin]:
    if shutil.which("nginx") is None or shutil.which("bwrap") is None:
        pytest.fail("nginx and bubblewrap are needed: run `make setup`", pytrace=False)
    options = TwinOptions(
        instances=4,
        bake_seconds=4,  # the canary's window on the page: several of its 1 s refreshes
        tick_seconds=0.5,
        upgrade_seconds=1.0,
        failure_threshold=2,
        lb_address="127.0.9.30",
        address_base="127.0.90.1",
    )
    with local_twin(options, say=lambda line: None) as running:
        yield running


def until(driver: Any, what: str, check: Callable[[], Any], timeout: float = 90) -> Any:
    """Poll ``check`` (reading the page only) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # noqa: BLE001 - an element redrawn between two reads: read again
            last = exc
        else:
            if last:
                return last
        time.sleep(0.2)
    shot = Path(os.environ.get("TMPDIR", "/tmp")) / f"dashboard-failure-{int(time.time())}.png"
    driver.save_screenshot(str(shot))
    raise AssertionError(f"the dashboard did not show {what} within {timeout} s (last: {last!r}; screenshot {shot})")


def tiles(driver: Any) -> dict[str, dict[str, str]]:
    """The fleet map of the scale set as drawn: per instance its data attributes and text."""
    script = """
      var out = {};
      document.querySelectorAll('[data-target="canary-rg:canary-vmss"] .instance').forEach(function (t) {
        out[t.getAttribute('data-instance')] = {release: t.getAttribute('data-release'),
          health: t.getAttribute('data-health'), inFlight: t.getAttribute('data-in-flight'), text: t.innerText};
      });
      return out;"""
    return driver.execute_script(script)  # type: ignore[no-any-return]


def current(driver: Any) -> dict[str, str] | None:
    return driver.execute_script(  # type: ignore[no-any-return]
        """var c = document.querySelector('[data-target="canary-rg:canary-vmss"] .current');
           if (!c) { return null; }
           return {rollout: c.getAttribute('data-rollout'),
                   release: c.querySelector('.release-name').textContent.trim(),
                   phase: c.querySelector('.phase').getAttribute('data-phase'), text: c.innerText};"""
    )


def _release_phases(driver: Any) -> dict[str, str]:
    """The group releases table as drawn: release name -> phase."""
    return driver.execute_script(  # type: ignore[no-any-return]
        """var out = {};
           document.querySelectorAll('#releases tbody tr').forEach(function (tr) {
             var name = tr.querySelector('.release-name'), phase = tr.querySelector('.phase');
             if (name && phase) { out[name.textContent] = phase.getAttribute('data-phase'); }
           });
           return out;"""
    )


def shoot(driver: Any, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SCREENSHOTS) / name))


def test_the_dashboard_follows_a_canary_its_batches_and_a_rollback_without_reloading(browser: Any, twin: Twin) -> None:
    key = twin.host.function_key
    browser.get(f"{twin.host.api_url}/dashboard?code={key}&refresh=1")
    browser.execute_script("window.__opened = 'once';")
    assert browser.title == "vmss-canary dashboard"
    found = until(browser, "the 4 instances, healthy", lambda: len(tiles(browser)) == 4 and tiles(browser))
    assert {t["health"] for t in found.values()} == {"Healthy"}
    assert "no rollout recorded yet" in browser.find_element("css selector", f'[data-target="{VMSS_KEY}"]').text

    twin.upload(V1, EXAMPLES / V1)
    # The canary: one instance, badged, on v1, while the rest still run the model before any release.
    canary = until(
        browser,
        "v1's canary",
        lambda: (
            (c := current(browser))
            and c["phase"] in ("Canary", "Baking")
            and (t := tiles(browser))
            and t["0"]["release"] == V1
            and t
        ),
    )
    assert "canary" in canary["0"]["text"].split()
    assert [i for i, t in canary.items() if t["release"] == V1] == ["0"]
    shoot(browser, "dashboard-canary.png")

    # A batch goes out: an instance other than the canary turns to v1 while the rollout is Promoting.
    batch = until(
        browser,
        "v1's first batch",
        lambda: (
            (c := current(browser))
            and c["phase"] == "Promoting"
            and (t := tiles(browser))
            and any(i != "0" and (v["release"] == V1 or v["inFlight"] == "true") for i, v in t.items())
            and t
        ),
    )
    assert any("batch 1" in v["text"] or v["release"] == V1 for i, v in batch.items() if i != "0")
    shoot(browser, "dashboard-batch.png")
    done = until(browser, "v1 Succeeded", lambda: (c := current(browser)) and c["phase"] == "Succeeded" and c)
    assert V1 in done["release"]
    assert until(browser, "every instance on v1", lambda: {v["release"] for v in tiles(browser).values()} == {V1})

    # The walkthrough's broken v2: its canary fails the probe, the page shows the rollback and its cause.
    twin.upload(V2, EXAMPLES / V2)
    until(
        browser, "v2's rollback", lambda: (c := current(browser)) and c["release"] == V2 and c["phase"] == "RolledBack"
    )
    card = browser.find_element("css selector", f'[data-target="{VMSS_KEY}"]').text
    assert "rollback: canary unhealthy" in card and "probe failed" in card
    assert until(browser, "every instance back on v1", lambda: {v["release"] for v in tiles(browser).values()} == {V1})
    timeline = browser.find_element("id", "timeline").text
    assert "Canary -> RollingBack" in timeline and "RollingBack -> RolledBack" in timeline
    # The group release halts on the timer's next run after its target rolled back.
    halted = until(browser, "v2's release Halted", lambda: _release_phases(browser).get(V2) == "Halted" and True)
    assert halted and _release_phases(browser)[V1] == "Succeeded"
    shoot(browser, "dashboard-rollback.png")

    # An operator's reason is user input: markup and quotes in it show as text, nothing runs.
    twin.upload(V3, EXAMPLES / V3)
    v3 = twin.rollout_for(3)
    until(browser, "v3 under way", lambda: (c := current(browser)) and c["release"] == V3)
    status, outcome = twin.api("POST", f"rollouts/{v3['id']}/abort", {"rollback": True, "reason": HOSTILE})
    assert status == 200, outcome
    until(browser, "the hostile reason as text", lambda: HOSTILE in browser.find_element("id", "timeline").text)
    assert browser.execute_script("return window.__pwned === undefined;")
    assert browser.execute_script("return document.querySelectorAll('img').length;") == 0
    assert browser.execute_script("return document.scripts.length;") == 2  # the data block and the page's script

    # Never reloaded: the marker set after opening is still there, so every change above was a refresh in place.
    assert browser.execute_script("return window.__opened;") == "once"
    _assert_refreshes_carry_no_key(browser, key)
    _assert_no_script_errors(browser)


def _assert_refreshes_carry_no_key(browser: Any, key: str) -> None:
    """The browser's network log: the page's fetches go to dashboard?format=json with the key as a header."""
    urls, fetch_headers = [], []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            request = message["params"]["request"]
            urls.append(request["url"])
            if "format=json" in request["url"]:
                fetch_headers.append({k.lower(): v for k, v in request.get("headers", {}).items()})
    refreshes = [u for u in urls if u.endswith("/api/dashboard?format=json")]
    assert len(refreshes) >= 5, urls[:20]
    opened = [u for u in urls if "code=" in u]
    assert all("/api/dashboard?code=" in u for u in opened)  # the address the operator typed, and only it
    assert not [u for u in urls if key in u and u not in opened]
    assert fetch_headers and all(h.get("x-functions-key") == key for h in fetch_headers)


def _assert_no_script_errors(browser: Any) -> None:
    severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, severe


# --- escaping alone, without the CSP: hostile data served as the page -------------------------------------


def hostile_data() -> dict[str, Any]:
    """Dashboard data whose every text is hostile (release names, reasons, messages, ids, phases)."""
    at = datetime(2026, 11, 30, 1, 0, tzinfo=UTC).isoformat()
    instance = {
        "instanceId": HOSTILE,
        "release": HOSTILE,
        "latestModel": True,
        "health": HOSTILE,
        "inFlight": HOSTILE,
        "canary": True,
        "privateIp": HOSTILE,
        "why": HOSTILE,
    }
    rollout = {"id": HOSTILE, "release": HOSTILE, "phase": HOSTILE, "reason": HOSTILE, "updatedAt": at}
    return {
        "generatedAt": at,
        "source": HOSTILE,
        "ok": False,
        "errors": [HOSTILE],
        "readErrors": [HOSTILE],
        "defaultGroup": HOSTILE,
        "groups": [
            {"name": HOSTILE, "waveBakeSeconds": 0, "onFailure": HOSTILE, "waves": [{"wave": 1, "targets": [HOSTILE]}]}
        ],
        "releases": [
            {
                "id": HOSTILE,
                "group": HOSTILE,
                "release": HOSTILE,
                "phase": HOSTILE,
                "wave": 1,
                "waves": 1,
                "reason": HOSTILE,
                "updatedAt": at,
                "targets": [{"target": HOSTILE, "wave": 1, "rollout": rollout, "takenOut": False}],
            }
        ],
        "targets": [
            {
                "key": HOSTILE,
                "group": HOSTILE,
                "wave": 1,
                "state": {"stableRelease": HOSTILE, "error": HOSTILE},
                "error": HOSTILE,
                "rollouts": [rollout],
                "current": {
                    **rollout,
                    "canary": [HOSTILE],
                    "batch": {"number": 1, "instances": [HOSTILE]},
                    "rollbackReason": HOSTILE,
                },
                "fleet": {"summary": {"instances": 1, "onRelease": 1}, "instances": [instance]},
            }
        ],
        "timeline": [
            {"at": at, "kind": HOSTILE, "message": HOSTILE, "actor": HOSTILE, "release": HOSTILE, "target": HOSTILE}
        ],
        "unrouted": [{"release": HOSTILE, "group": HOSTILE, "phase": HOSTILE, "reason": HOSTILE}],
    }


@pytest.mark.parametrize("with_csp", [False, True], ids=["escaping-alone", "with-csp"])
def test_hostile_names_and_reasons_render_as_text_and_nothing_runs(browser: Any, with_csp: bool) -> None:
    nonce = new_nonce()
    page = render_page(hostile_data(), nonce, refresh=300).encode()
    headers = page_headers(nonce) if with_csp else {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server API
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        browser.get(f"http://127.0.0.1:{server.server_address[1]}/api/dashboard")
        until(browser, "the drawn page", lambda: browser.find_elements("css selector", ".instance"))
        body = browser.find_element("tag name", "body").text
        # Each hostile text is shown, character for character, in every section.
        for section in ("releases", "waves", "targets", "timeline", "problems"):
            assert HOSTILE in browser.find_element("id", section).text, section
        assert body.count(HOSTILE) >= 10
        assert browser.execute_script("return window.__pwned === undefined;")
        assert browser.execute_script("return document.querySelectorAll('img, textarea').length;") == 0
        assert browser.execute_script("return document.scripts.length;") == 2
        # The page's own script ran (it drew everything), so the CSP lets it through with its nonce.
        assert browser.find_element("id", "status").text.startswith("live")
    finally:
        server.shutdown()
        server.server_close()
