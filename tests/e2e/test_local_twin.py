"""End to end on the local twin: the function app under the local Functions host, a fleet of real
nginx instances whose release scripts run in bubblewrap, and the round-robin load balancer in front.

The assertions are about what a user sees through the balancer, as in the walkthrough
(`curl -s "$lb_ip" | grep title`), and about the audit trail the operator reads over HTTP.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from emulator.twin import EXAMPLES, Twin, TwinOptions, local_twin

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

OLD, V1, V3 = "Welcome to nginx!", "Welcome to nginx on Azure VMSS!", "Welcome to nginx v3!"
ENDED = ("Succeeded", "RolledBack", "Aborted", "Failed", "Rejected")


@pytest.fixture
def twin() -> Iterator[Twin]:
    if shutil.which("nginx") is None or shutil.which("bwrap") is None:
        pytest.fail("nginx and bubblewrap are needed: run `make setup`", pytrace=False)
    options = TwinOptions(
        instances=3,
        bake_seconds=4,
        tick_seconds=0.5,
        upgrade_seconds=0.3,
        failure_threshold=2,
        lb_address="127.0.9.2",
        address_base="127.0.50.1",
    )
    with local_twin(options, say=lambda line: None) as running:
        yield running


def wait_for(twin: Twin, version: int, phases: tuple[str, ...], timeout: float = 90) -> dict[str, Any]:
    rollout = twin.rollout_for(version)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, detail = twin.api("GET", f"rollouts/{rollout['id']}")
        assert status == 200
        if detail["phase"] in phases:
            return detail  # type: ignore[no-any-return]
        time.sleep(0.25)
    raise AssertionError(f"v{version} not in {phases} after {timeout} s: {detail['phase']} {detail['reason']}")


def titles_until(twin: Twin, expected: set[str], timeout: float = 15) -> set[str]:
    """Sample the balancer until exactly ``expected`` titles are served (the LB probe lags a little)."""
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        seen = set(twin.sample_titles(9))
        if seen == expected:
            return seen
        time.sleep(0.3)
    return seen


def test_the_walkthrough_release_goes_out_and_the_balancer_interleaves_then_serves_only_v1(twin: Twin) -> None:
    assert titles_until(twin, {OLD}) == {OLD}
    twin.upload("install_nginx.v1.sh", EXAMPLES / "install_nginx.v1.sh")

    wait_for(twin, 1, ("Baking",))
    # The walkthrough's canary moment: old and new pages interleaved behind one address.
    assert titles_until(twin, {OLD, V1}) == {OLD, V1}
    assert Counter(twin.instance_titles().values()) == Counter({OLD: 2, V1: 1})

    detail = wait_for(twin, 1, ENDED)
    assert detail["phase"] == "Succeeded", detail["reason"]
    assert titles_until(twin, {V1}) == {V1}
    assert set(twin.instance_titles().values()) == {V1}
    calls = [r.body["instanceIds"] for r in twin.emulator.requests("POST", "/manualupgrade")]
    assert calls == [["0"], ["1"], ["2"]]


def test_a_release_that_breaks_nginx_is_rolled_back_and_the_balancer_never_stops_serving(twin: Twin) -> None:
    twin.upload("install_nginx.v1.sh", EXAMPLES / "install_nginx.v1.sh")
    assert wait_for(twin, 1, ENDED)["phase"] == "Succeeded"

    twin.upload("install_nginx.v2.sh", EXAMPLES / "install_nginx.v2.sh")
    v2 = twin.rollout_for(2)
    worst = 6
    deadline = time.monotonic() + 90
    while True:
        sample = twin.sample_titles(6)
        worst = min(worst, sample[V1])
        phase = twin.api("GET", f"rollouts/{v2['id']}")[1]["phase"]
        if phase in ENDED or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    detail = twin.api("GET", f"rollouts/{v2['id']}")[1]
    assert detail["phase"] == "RolledBack", detail["reason"]
    assert "probe failed" in detail["rollbackReason"]
    assert detail["canary"] == ["0"] and detail["upgraded"] == ["0"]  # v2 never got past the canary
    kinds = [e["kind"] for e in detail["events"]]
    assert kinds.count("HealthCheckFailed") == 2 and "ReimageStarted" in kinds
    assert titles_until(twin, {V1}) == {V1}
    assert set(twin.instance_titles().values()) == {V1}
    # The balancer never stopped serving v1: at worst the canary's share (1 in 3) failed or showed v2
    # before the balancer's own probe took the broken instance out.
    assert worst >= 4, f"only {worst} of 6 answers were v1 in the worst sample"


def test_an_operator_aborts_over_http_and_the_fleet_is_back_on_the_stable_page(twin: Twin) -> None:
    twin.upload("install_nginx.v3.sh", EXAMPLES / "install_nginx.v3.sh")
    rollout = wait_for(twin, 3, ("Baking",))
    assert titles_until(twin, {OLD, V3}) == {OLD, V3}

    status, _ = twin.api("POST", f"rollouts/{rollout['id']}/abort", {"rollback": "please"})
    assert status == 400
    status, outcome = twin.api("POST", f"rollouts/{rollout['id']}/abort", {"rollback": True, "reason": "e2e"})
    assert status == 200 and outcome["phase"] == "RollingBack"

    detail = wait_for(twin, 3, ENDED)
    assert detail["phase"] == "RolledBack" and "e2e" in detail["rollbackReason"]
    assert titles_until(twin, {OLD}) == {OLD}
    assert set(twin.instance_titles().values()) == {OLD}
    listing = twin.api("GET", "rollouts")[1]
    assert listing["target"]["stableVersion"] is None and listing["target"]["activeRolloutId"] is None


def test_the_api_needs_a_function_key(twin: Twin) -> None:
    import requests

    assert requests.get(f"{twin.host.url}/api/rollouts", timeout=5).status_code == 401
    assert requests.get(f"{twin.host.url}/api/rollouts?code=wrong", timeout=5).status_code == 401
    assert twin.api("GET", "rollouts")[0] == 200
    status, fleet = twin.api("GET", "fleet")
    assert status == 200 and fleet["summary"]["instances"] == 3 and fleet["summary"]["healthy"] == 3
    assert all(i["detail"].startswith(f"instance {i['instanceId']}: healthy (200 in") for i in fleet["instances"])
