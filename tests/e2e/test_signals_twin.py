"""The canary judge's signals on the local twin: real nginx instances, the round-robin balancer probing them, and
the emulator's Azure Monitor endpoints read through the product's adapters (rollout/adapters/signals.py) with
the real clients over HTTPS.

One instance is broken the way a bad release breaks it: a CustomScript run (the twin's handler, in bubblewrap)
replaces its site with one answering 500. Its 5xx must show in the Log Analytics signals (from nginx's own
access log), its probe status must go down (from the balancer's probes), and every instance keeps its own
CPU figure (from its nginx processes).

Addresses: the balancer on 127.0.9.40, the instances from 127.0.94.1 (no other test uses them). Run it in a
network namespace of its own: ``unshare -n bash -c 'ip link set lo up; .venv/bin/python -m pytest
tests/e2e/test_signals_twin.py'``.
"""

from __future__ import annotations

import http.client
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from emulator.nginx import NginxRuntime, custom_script_model
from emulator.twin import RESOURCE_GROUP, VMSS, WORKSPACE_ID, Twin, TwinOptions, load_balancer_id, local_twin
from rollout.adapters.compute import StaticTokenCredential
from rollout.adapters.signals import LoadBalancerProbeSource, LogAnalyticsSource, ScaleSetMetricsSource

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

BREAK_NGINX = b"""#!/bin/bash
# A release that installs fine and then serves 500 on every path: only the traffic shows it.
cat <<'CONF' | sudo tee /etc/nginx/sites-available/default >/dev/null
server {
    listen 80 default_server;
    location / { return 500; }
}
CONF
sudo systemctl restart nginx
exit 0
"""


@pytest.fixture
def twin() -> Iterator[Twin]:
    if shutil.which("nginx") is None or shutil.which("bwrap") is None:
        pytest.fail("nginx and bubblewrap are needed: run `make setup`", pytrace=False)
    options = TwinOptions(
        instances=3, tick_seconds=0.5, upgrade_seconds=0.3, lb_address="127.0.9.40", address_base="127.0.94.1"
    )
    with local_twin(options, say=lambda line: None) as running:
        yield running


def status_of(address: str) -> int:
    conn = http.client.HTTPConnection(address, 80, timeout=5)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_a_broken_instances_5xx_and_failed_probes_show_in_its_signals(twin: Twin) -> None:
    from azure.storage.blob import BlobServiceClient

    emu = twin.emulator
    instances = {i.instance_id: i for i in emu.scale_set(RESOURCE_GROUP, VMSS).instances.values()}
    ids = sorted(instances, key=int)
    broken = ids[0]
    addresses = {i: instances[i].address for i in ids}

    # The broken "release": a script in a blob, run by the instance's CustomScript handler.
    service = BlobServiceClient.from_connection_string(twin.azurite.connection_string)
    scratch = service.get_container_client("scratch")
    scratch.create_container()
    script = scratch.upload_blob("break_nginx.sh", BREAK_NGINX)
    runtime = instances[broken].runtime
    assert isinstance(runtime, NginxRuntime)

    start = datetime.now(UTC)
    emu.monitor.sample_cpu()
    result = runtime.apply(custom_script_model([script.url], "bash break_nginx.sh", image_id=runtime.image_id))
    assert result.succeeded, result.message
    assert runtime.serving, runtime.last_nginx_error
    statuses = {i: [status_of(addresses[i]) for _ in range(6)] for i in ids}
    assert statuses[broken] == [500] * 6 and all(s == [200] * 6 for i, s in statuses.items() if i != broken)
    balancer = twin.balancer_of(VMSS)
    assert balancer.wait_until(lambda s: addresses[broken] not in s.up and len(s.up) == 2, timeout_s=15)
    twin.sample_titles(6)  # user traffic through the balancer: the healthy two only
    time.sleep(0.3)
    emu.monitor.sample_cpu()
    end = datetime.now(UTC)

    credential = StaticTokenCredential(emu.token)
    arm = {"credential": credential, "arm_endpoint": emu.url, "ca_bundle": emu.ca_bundle}
    logs = LogAnalyticsSource(
        WORKSPACE_ID, credential=credential, scale_set_name=VMSS, endpoint=emu.url, ca_bundle=emu.ca_bundle
    ).read(ids, start, end)
    probes = LoadBalancerProbeSource(load_balancer_id(VMSS), lambda: addresses, **arm).read(ids, start, end)  # type: ignore[arg-type]
    metrics = ScaleSetMetricsSource(emu.vmss_id(RESOURCE_GROUP, VMSS), **arm).read(ids, start, end)  # type: ignore[arg-type]

    # nginx's access log: the broken instance answered every request (ours and the balancer's probes) with 500.
    assert logs[broken].requests is not None and logs[broken].requests >= 6
    assert logs[broken].errors == logs[broken].requests
    for healthy in ids[1:]:
        assert logs[healthy].errors == 0 and (logs[healthy].requests or 0) >= 6
        assert len(logs[healthy].latencies_ms) == logs[healthy].requests
    # The balancer's probes: down for the broken one, up for the others.
    assert {i: s.lb_probe_up for i, s in probes.items()} == {ids[0]: False, ids[1]: True, ids[2]: True}
    # Platform metrics from the nginx processes and their traffic.
    for i in ids:
        assert metrics[i].cpu_percent is not None and 0.0 <= metrics[i].cpu_percent <= 100.0
        assert metrics[i].network_in_bytes is not None and metrics[i].network_in_bytes > 0
