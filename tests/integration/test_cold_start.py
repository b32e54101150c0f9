"""Cold start (issue 13): a fresh interpreter that imports the function app and serves the first
``GET /api/rollouts`` through the function object, against Azurite, loads none of the SDKs that only the
paths calling ARM or judging a canary need. Figures are printed (``-s``), no timing is asserted: the
figures against their targets are ``make bench``'s (docs/performance.md)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from bench.coldstart import HEAVY, REPO, app_env, measure

pytestmark = pytest.mark.integration


def test_importing_the_app_and_serving_a_read_loads_no_arm_or_judge_sdk(azurite: Any, azurite_names: Any) -> None:
    result = measure(("function_app",), serve=True, env=app_env(azurite.connection_string, azurite_names.table_prefix))
    print(
        f"\ncold start: import function_app "
        f"{result['import_s'] * 1000:.0f} ms, peak {result['import_rss_mib']:.0f} MiB;"
        f" first GET /api/rollouts {result['serve_s'] * 1000:.0f} ms, peak {result['serve_rss_mib']:.0f} MiB;"
        f" loaded {result['loaded']}"
    )
    assert result["status"] == 200, result["body"]
    assert [m for m in HEAVY if m in result["loaded"]] == []
    # The state store's SDK is loaded: the read did reach Azurite through the app's own adapters.
    assert "azure.data.tables" in result["loaded"]


def test_the_check_sees_an_sdk_that_is_imported() -> None:
    """The probe itself: a child that does import the compute SDK is reported as loading it."""
    result = measure(("azure.functions", "azure.mgmt.compute"))
    assert "azure.mgmt.compute" in result["loaded"] and "azure.mgmt.network" not in result["loaded"]


def test_the_compute_adapter_makes_its_clients_at_first_use() -> None:
    """Built and closed unused: neither SDK imported. The first client asked for: that SDK only, made once."""
    code = (
        "import sys, threading\n"
        "from rollout.adapters.compute import AzureCompute, StaticTokenCredential\n"
        "def make():\n"
        "    return AzureCompute(subscription_id='s', resource_group='rg', vmss_name='v', extension_name='e',\n"
        "                        arm_endpoint='https://127.0.0.1:9', credential=StaticTokenCredential('t'))\n"
        "make().close()\n"
        "print(sorted(m for m in ('azure.mgmt.compute', 'azure.mgmt.network') if m in sys.modules))\n"
        "compute = make()\n"
        "seen = []\n"
        "threads = [threading.Thread(target=lambda: seen.append(compute._compute)) for _ in range(4)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "print(len({id(c) for c in seen}), 'azure.mgmt.network' in sys.modules)\n"
        "compute.close()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True, cwd=REPO
    )
    assert out.stdout.split("\n")[:2] == ["[]", "1 False"], out.stdout + out.stderr


def test_the_http_library_of_the_probes_loads_with_the_first_probe_only() -> None:
    """h11 (the probes' HTTP/1.1) costs about 5 ms and 0.3 MiB of import: importing the app does not load it,
    the first probe does."""
    code = (
        "import sys\n"
        "import function_app\n"
        "print('h11' in sys.modules)\n"
        "from rollout.adapters.probe import HttpProber\n"
        "from rollout.ports import ProbeTarget\n"
        "from rollout.settings import ProbeSettings\n"
        "prober = HttpProber(ProbeSettings(port=9, timeout_seconds=2))\n"
        "[result] = prober.probe([ProbeTarget('0', '127.0.0.1')]).values()\n"
        "print('h11' in sys.modules, result.detail)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True, cwd=REPO
    )
    assert out.stdout.split("\n")[:2] == ["False", "True connection failed: connection refused"], (
        out.stdout + out.stderr
    )
