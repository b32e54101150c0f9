"""``python -m emulator serve`` as another process would use it: read the startup JSON line, talk to
the endpoint with the real SDK and the admin API, then SIGTERM and expect a clean exit."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.fixtures.emulator import StaticTokenCredential, free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_serve_prints_its_endpoint_serves_the_sdk_and_stops_on_sigterm(tmp_path: Path) -> None:
    from azure.mgmt.compute import ComputeManagementClient

    port = free_port("127.0.17.1")
    cmd = [
        sys.executable,
        "-m",
        "emulator",
        "serve",
        "--token",
        "cli-token",
        "--state-dir",
        str(tmp_path),
        "--address-base",
        "127.0.17.1",
        "--instance-port",
        str(port),
        "--instances",
        "2",
        "--script-uri",
        "https://r.example/init/install_nginx.v1.sh",
        "--upgrade-seconds",
        "0.1",
        "--info-file",
        str(tmp_path / "info.json"),
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert json.loads((tmp_path / "info.json").read_text()) == info
        [scale_set] = info["scale_sets"]
        client = ComputeManagementClient(
            StaticTokenCredential("cli-token"),
            info["subscription_id"],
            base_url=info["url"],
            connection_verify=info["ca_bundle"],
            retry_total=0,
        )
        with client:
            vms = list(client.virtual_machine_scale_set_vms.list(scale_set["resourceGroup"], scale_set["name"]))
        assert [vm.instance_id for vm in vms] == ["0", "1"]
        address = scale_set["instances"][0]["address"]
        assert "Welcome to nginx!" in requests.get(f"http://{address}:{port}/", timeout=5).text
        described = requests.get(
            f"{info['url']}/_admin/scalesets/{scale_set['resourceGroup']}/{scale_set['name']}",
            headers={"Authorization": "Bearer cli-token"},
            verify=info["ca_bundle"],
            timeout=5,
        )
        assert described.json()["instances"][1]["address"] == scale_set["instances"][1]["address"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert code == 0, proc.stderr.read() if proc.stderr else ""
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{address}:{port}/", timeout=2)


def test_serve_creates_a_flexible_scale_set_when_asked(tmp_path: Path) -> None:
    from azure.mgmt.compute import ComputeManagementClient

    cmd = [
        *(sys.executable, "-m", "emulator", "serve", "--token", "cli-token", "--state-dir", str(tmp_path)),
        *("--address-base", "127.0.17.101", "--instance-port", str(free_port("127.0.17.101"))),
        *("--instances", "2", "--orchestration-mode", "Flexible", "--flexible-model-applied", "in_vm_list"),
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        [scale_set] = info["scale_sets"]
        assert scale_set["orchestrationMode"] == "Flexible"
        names = [i["instanceId"] for i in scale_set["instances"]]
        assert all(n.startswith(scale_set["name"] + "_") for n in names)
        client = ComputeManagementClient(
            StaticTokenCredential("cli-token"),
            info["subscription_id"],
            base_url=info["url"],
            connection_verify=info["ca_bundle"],
            retry_total=0,
        )
        with client:
            vms = list(
                client.virtual_machines.list(
                    scale_set["resourceGroup"], filter=f"'virtualMachineScaleSet/id' eq '{scale_set['id']}'"
                )
            )
        assert [vm.name for vm in vms] == names
        assert all(vm.as_dict()["properties"]["latestModelApplied"] is True for vm in vms)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
