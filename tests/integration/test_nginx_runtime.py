"""NginxRuntime: real nginx per instance on 127.0.20.x-127.0.29.x, real release scripts, real HTTP.

Every runtime is stopped by the ``runtimes`` fixture, pass or fail; the last tests check that
stopping (and the death of the process that started nginx) leaves no process behind.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from emulator.customscript import FetchError
from emulator.nginx import (
    NginxRuntime,
    custom_script_model,
    find_free_address,
    nginx_runtime_factory,
    pin_listen_directives,
)
from emulator.runtime import InstanceModel

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
BASE = "http://127.0.0.1:9/init/"  # answered by the dict fetcher below, never contacted
IMAGES = "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Compute/images/"


def _fetch(url: str) -> bytes:
    name = url.removeprefix(BASE)
    path = EXAMPLES / name
    if not url.startswith(BASE) or not path.is_file():
        raise FetchError(url, "http request failed with status 404", 404)
    return path.read_bytes()


def release(version: int | None) -> InstanceModel:
    name = "install_nginx.sh" if version is None else f"install_nginx.v{version}.sh"
    return custom_script_model([BASE + name], f"./{name}")


def get(address: str, port: int = 80) -> tuple[int, str]:
    """One real HTTP GET /; raises ConnectionRefusedError when nothing listens."""
    conn = http.client.HTTPConnection(address, port, timeout=3)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def title(address: str, port: int = 80) -> str:
    status, body = get(address, port)
    assert status == 200, body
    return body.split("<title>", 1)[1].split("</title>", 1)[0]


def refused(address: str, port: int = 80) -> bool:
    try:
        get(address, port)
    except ConnectionRefusedError:
        return True
    return False


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"  # dead, waiting for whoever inherited it to reap it


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, InstanceModel], NginxRuntime]:
    return nginx_runtime_factory(tmp_path_factory.mktemp("twin"), _fetch, script_timeout_s=20)


@pytest.fixture
def runtimes(
    factory: Callable[[str, InstanceModel], NginxRuntime],
) -> Iterator[Callable[[InstanceModel], NginxRuntime]]:
    made: list[NginxRuntime] = []

    def make(initial: InstanceModel) -> NginxRuntime:
        rt = factory(find_free_address(), initial)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.stop()


def test_walkthrough_v0_then_v1_change_the_page_served_over_http(runtimes: Callable[..., NginxRuntime]) -> None:
    vm = runtimes(InstanceModel(image_id="UbuntuLTS"))
    vm.start()
    assert refused(vm.address)  # a fresh Ubuntu VM: nothing on port 80 yet

    v0 = vm.apply(release(None))
    assert v0.succeeded, v0.message
    assert title(vm.address) == "Welcome to nginx!"

    v1 = vm.apply(release(1))
    assert v1.succeeded, v1.message
    assert title(vm.address) == "Welcome to nginx on Azure VMSS!"


def test_a_broken_release_succeeds_as_an_extension_but_the_instance_serves_nothing(
    runtimes: Callable[..., NginxRuntime],
) -> None:
    vm = runtimes(InstanceModel(image_id="UbuntuLTS"))
    vm.start()
    assert vm.apply(release(1)).succeeded

    v2 = vm.apply(release(2))
    assert v2.succeeded and v2.exit_code == 0  # the extension cannot see the damage...
    assert refused(vm.address)  # ...the health probe can
    assert vm.last_nginx_error is not None and "locaton" in vm.last_nginx_error
    assert "restart nginx" in vm.service_requests

    v3 = vm.apply(release(3))  # v3 is idempotent: it repairs what v2 broke
    assert v3.succeeded, v3.message
    assert title(vm.address) == "Welcome to nginx v3!"
    assert vm.last_nginx_error is None


def test_reimage_resets_the_disk_to_the_image_then_runs_the_extension(runtimes: Callable[..., NginxRuntime]) -> None:
    vm = runtimes(InstanceModel(image_id="UbuntuLTS"))
    vm.start()
    vm.apply(release(2))
    assert refused(vm.address)

    # Re-running v1 on the damaged disk does not help (apt-get sees nginx installed)...
    assert vm.apply(release(1)).succeeded
    assert refused(vm.address)
    # ...reimaging does: a fresh disk, then v1.
    result = vm.reimage(release(1))
    assert result.succeeded, result.message
    assert title(vm.address) == "Welcome to nginx on Azure VMSS!"
    assert not (vm.etc_nginx / "sites-available" / "default").read_text().count("locaton")


def test_image_profiles_and_an_image_change_on_upgrade(runtimes: Callable[..., NginxRuntime]) -> None:
    vm = runtimes(InstanceModel(image_id=IMAGES + "nginx-base-image"))
    vm.start()  # nginx preinstalled: serves right after boot
    assert title(vm.address) == "Welcome to nginx!"
    (vm.www_html / "leftover.html").write_text("from the old disk")

    result = vm.apply(InstanceModel(image_id=IMAGES + "nginx-updated-image"))
    assert result.succeeded  # no extension in the model: nothing to run
    assert title(vm.address) == "Welcome to nginx on Azure VMSS!"
    assert not (vm.www_html / "leftover.html").exists()  # a new image is a new OS disk

    vm.apply(InstanceModel(image_id=IMAGES + "nginx-v7-image"))
    assert title(vm.address) == "Welcome to nginx v7!"
    vm.apply(InstanceModel(image_id=IMAGES + "nginx-broken-image"))
    assert refused(vm.address)


def test_set_healthy_false_takes_the_instance_down_until_set_back(runtimes: Callable[..., NginxRuntime]) -> None:
    vm = runtimes(InstanceModel(image_id=IMAGES + "nginx-base-image"))
    vm.start()
    assert title(vm.address) == "Welcome to nginx!"
    vm.set_healthy(False)
    assert refused(vm.address)
    assert vm.apply(release(1)).succeeded  # a release does not cure a sick instance
    assert refused(vm.address)
    vm.set_healthy(True)
    assert title(vm.address) == "Welcome to nginx on Azure VMSS!"


def test_a_script_that_stops_nginx_keeps_it_stopped(runtimes: Callable[..., NginxRuntime]) -> None:
    vm = runtimes(InstanceModel(image_id=IMAGES + "nginx-base-image"))
    vm.start()
    model = InstanceModel(
        image_id=IMAGES + "nginx-base-image",
        extension_publisher="Microsoft.Azure.Extensions",
        extension_type="CustomScript",
        extension_version="2.1",
        settings={"commandToExecute": "sudo systemctl stop nginx.service"},
    )
    assert vm.apply(model).succeeded
    assert vm.service_requests == ["stop nginx"]
    assert refused(vm.address)


def test_a_failing_script_is_reported_and_nginx_still_restarts(runtimes: Callable[..., NginxRuntime]) -> None:
    vm = runtimes(InstanceModel(image_id=IMAGES + "nginx-base-image"))
    vm.start()
    result = vm.apply(custom_script_model([BASE + "install_nginx.v99.sh"], "./install_nginx.v99.sh"))
    assert not result.succeeded and "404" in result.message
    assert title(vm.address) == "Welcome to nginx!"


def test_start_raises_when_another_process_holds_the_address(runtimes: Callable[..., NginxRuntime]) -> None:
    first = runtimes(InstanceModel(image_id=IMAGES + "nginx-base-image"))
    first.start()
    second = NginxRuntime(
        first.address, InstanceModel(image_id="UbuntuLTS"), state_dir=first.root.parent / "x", handler=first.handler
    )
    try:
        with pytest.raises(OSError):
            second.start()  # a bare image binds nothing, yet the address is taken
    finally:
        second.stop()
    assert title(first.address) == "Welcome to nginx!"


def test_the_port_is_configurable(tmp_path: Path) -> None:
    vm = nginx_runtime_factory(tmp_path, _fetch, port=18080)(
        find_free_address(port=18080), InstanceModel(image_id=IMAGES + "nginx-base-image")
    )
    try:
        vm.start()
        assert title(vm.address, 18080) == "Welcome to nginx!"
        assert refused(vm.address, 80)
    finally:
        vm.stop()


def test_listen_directives_are_pinned_to_the_instance_address() -> None:
    conf = (
        "server {\n\tlisten 80 default_server;\n\tlisten [::]:80 default_server;\n  listen 8080;\n"
        "  listen *:80;\n  listen unix:/run/x.sock;\n}\n"
    )
    pinned = pin_listen_directives(conf, "127.0.20.7", 8081)
    assert "\tlisten 127.0.20.7:8081 default_server;" in pinned
    assert "listen 127.0.20.7:8080;" in pinned
    assert "listen 127.0.20.7:8081;" in pinned
    assert "# dropped by the twin (no IPv6): listen [::]:80 default_server;" in pinned
    assert "listen unix:/run/x.sock;" in pinned


def test_stop_leaves_no_process_and_no_files(runtimes: Callable[..., NginxRuntime]) -> None:
    vm = runtimes(InstanceModel(image_id=IMAGES + "nginx-base-image"))
    vm.start()
    pids = vm.pids()
    comms = [Path(f"/proc/{p}/comm").read_text().strip() for p in pids]
    assert comms.count("nginx") >= 2  # master and at least one worker
    vm.stop()
    assert all(_gone(p) for p in pids), [p for p in pids if not _gone(p)]
    assert refused(vm.address)
    assert not vm.root.exists()


def test_nginx_dies_with_the_process_that_started_it_even_from_a_worker_thread(tmp_path: Path) -> None:
    # A child Python starts an instance from a short-lived thread (as the ARM emulator's workers do),
    # reports the nginx pids, and is SIGKILLed: no teardown runs, yet nothing may survive it.
    address = find_free_address()
    code = textwrap.dedent(f"""
        import sys, threading, time
        from emulator.nginx import nginx_runtime_factory
        from emulator.runtime import InstanceModel
        rt = nginx_runtime_factory({str(tmp_path)!r}, lambda u: b"")(
            {address!r}, InstanceModel(image_id="x/nginx-base-image"))
        t = threading.Thread(target=rt.start); t.start(); t.join()
        time.sleep(0.3)  # the thread that asked is gone: nginx must still be up
        print(" ".join(map(str, rt.pids())), flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        pids = [int(p) for p in child.stdout.readline().split()]
        assert len(pids) >= 4, pids
        assert title(address) == "Welcome to nginx!"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    deadline = time.monotonic() + 5
    while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(p) for p in pids)
    assert refused(address)
