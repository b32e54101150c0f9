"""The round-robin balancer in front of real nginx instances (127.0.20.x+), listening on 127.0.9.x.

Probe interval 0.1 s, 2 failures to mark down, 1 success to mark up: the walkthrough's probe, faster.
"""

from __future__ import annotations

import http.client
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from emulator.lb import BalancerStats, RoundRobinBalancer
from emulator.nginx import NginxRuntime, find_free_address, nginx_runtime_factory
from emulator.runtime import InstanceModel

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

IMAGES = "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Compute/images/"


def get(url_host: str, port: int) -> tuple[int, str, str]:
    """GET / through the balancer: (status, <title>, X-Backend)."""
    conn = http.client.HTTPConnection(url_host, port, timeout=5)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        body = resp.read().decode()
        title = body.split("<title>", 1)[1].split("</title>", 1)[0] if "<title>" in body else ""
        return resp.status, title, resp.getheader("X-Backend") or ""
    finally:
        conn.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NginxRuntime]]:
    """Three instances with nginx baked in: two on v1, one canary on v3 (image profiles)."""
    factory = nginx_runtime_factory(tmp_path_factory.mktemp("lb-fleet"), lambda url: b"")
    images = ["nginx-v1-image", "nginx-v1-image", "nginx-v3-image"]
    vms = [factory(find_free_address(), InstanceModel(image_id=IMAGES + i)) for i in images]
    try:
        for vm in vms:
            vm.start()
        yield vms
    finally:
        for vm in vms:
            vm.stop()


@pytest.fixture
def balancer() -> Iterator[Callable[..., RoundRobinBalancer]]:
    made: list[RoundRobinBalancer] = []

    def make(**kw: object) -> RoundRobinBalancer:
        lb = RoundRobinBalancer(f"127.0.9.{random.randint(2, 254)}", 0, probe_interval_s=0.1, probe_timeout_s=0.5, **kw)  # type: ignore[arg-type]
        made.append(lb.start())
        return lb

    yield make
    for lb in made:
        lb.stop()


def all_up(n: int) -> Callable[[BalancerStats], bool]:
    return lambda s: len(s.up) == n


def test_round_robin_over_healthy_backends_interleaves_old_and_new_pages(
    fleet: list[NginxRuntime], balancer: Callable[..., RoundRobinBalancer]
) -> None:
    lb = balancer(backends=[vm.address for vm in fleet])
    assert lb.wait_until(all_up(3))
    answers = [get(lb.address, lb.port) for _ in range(9)]
    assert {status for status, _, _ in answers} == {200}
    # Strict rotation: every window of three consecutive requests hits each backend once.
    backends = [b for _, _, b in answers]
    for i in range(0, 9, 3):
        assert sorted(backends[i : i + 3]) == sorted(vm.address for vm in fleet)
    titles = Counter(t for _, t, _ in answers)
    assert titles == {"Welcome to nginx v1!": 6, "Welcome to nginx v3!": 3}
    stats = lb.stats()
    assert stats.requests_total == 9
    assert all(stats.backends[vm.address].requests == 3 for vm in fleet)


def test_a_backend_that_fails_its_probe_is_dropped_then_readded(
    fleet: list[NginxRuntime], balancer: Callable[..., RoundRobinBalancer]
) -> None:
    lb = balancer(backends=[vm.address for vm in fleet])
    assert lb.wait_until(all_up(3))
    sick = fleet[2]
    sick.set_healthy(False)
    try:
        assert lb.wait_until(lambda s: not s.backends[sick.address].up)
        assert lb.stats().backends[sick.address].consecutive_failed >= 2
        served = {get(lb.address, lb.port)[2] for _ in range(6)}
        assert served == {fleet[0].address, fleet[1].address}
    finally:
        sick.set_healthy(True)
    assert lb.wait_until(all_up(3))
    served = {get(lb.address, lb.port)[2] for _ in range(6)}
    assert served == {vm.address for vm in fleet}


def test_backends_from_a_callable_follow_scale_in_and_out(
    fleet: list[NginxRuntime], balancer: Callable[..., RoundRobinBalancer]
) -> None:
    current = [fleet[0].address]
    lb = balancer(backends=lambda: list(current))
    assert lb.wait_until(all_up(1))
    assert {get(lb.address, lb.port)[2] for _ in range(3)} == {fleet[0].address}
    current.append(fleet[2].address)
    assert lb.wait_until(all_up(2))
    current.remove(fleet[0].address)
    assert lb.wait_until(lambda s: list(s.backends) == [fleet[2].address] and s.up == [fleet[2].address])
    assert get(lb.address, lb.port)[1] == "Welcome to nginx v3!"


def test_no_healthy_backend_is_a_503_and_set_backends_recovers(
    fleet: list[NginxRuntime], balancer: Callable[..., RoundRobinBalancer]
) -> None:
    nothing_there = find_free_address()  # bindable, so nothing listens: every probe is refused
    lb = balancer(backends=[nothing_there])
    assert lb.wait_until(lambda s: s.backends[nothing_there].probes >= 2)
    status, _, _ = get(lb.address, lb.port)
    assert status == 503
    assert lb.stats().no_backend == 1
    assert "ConnectionRefusedError" in lb.stats().backends[nothing_there].last_probe

    lb.set_backends([fleet[1].address])
    assert lb.wait_until(all_up(1))
    assert get(lb.address, lb.port)[:2] == (200, "Welcome to nginx v1!")


def test_the_balancer_only_listens_on_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        RoundRobinBalancer("0.0.0.0", 0)


def test_stop_closes_the_port_and_ends_every_thread(fleet: list[NginxRuntime]) -> None:
    lb = RoundRobinBalancer("127.0.9.1", 0, backends=[fleet[0].address], probe_interval_s=0.05).start()
    assert lb.wait_until(all_up(1))
    assert get(lb.address, lb.port)[0] == 200
    lb.stop()
    assert not [t.name for t in threading.enumerate() if t.name.startswith(("lb-", "lb-probe"))]
    with pytest.raises(ConnectionRefusedError):
        get(lb.address, lb.port)
