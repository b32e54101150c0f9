"""Cold start: what a fresh interpreter pays to import the function app and to serve its first read.

Each measurement is one fresh ``python -c`` process (``python -X frozen_modules`` as the venv runs it),
reporting the wall time of the import (``time.perf_counter`` around it), the process's peak resident
memory afterwards (``VmHWM`` of /proc/self/status: ``ru_maxrss`` keeps the
parent's peak across ``exec`` on Linux) and which of the heavy SDKs are in ``sys.modules``. The first
``GET /api/rollouts`` is served through the function object (the Python callable the Functions worker
calls) against Azurite, with an ARM endpoint that nothing listens on: the read must not call ARM.
Shared by ``bench/perf.py`` (medians of 7 runs) and tests/integration/test_cold_start.py (one run, the
modules asserted, no timing asserted).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# The SDKs only the paths that call ARM or judge a canary need (issue 13).
HEAVY = ("azure.mgmt.compute", "azure.mgmt.network", "azure.mgmt.monitor", "azure.monitor", "scipy")
# Reported as well: what the blob trigger's SDK-type binding and the identity chain bring in.
REPORTED = (*HEAVY, "azure.storage.blob", "azure.storage.queue", "azure.identity", "azure.data.tables")

_CHILD = r"""
import json, sys, time
def peak_mib():
    # VmHWM: this process image's peak RSS. (ru_maxrss would carry the parent's peak across exec.)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
started = time.perf_counter()
for name in {modules!r}:
    __import__(name)
imported = time.perf_counter() - started
rss_import = peak_mib()
result = {{"import_s": imported, "import_rss_mib": rss_import}}
if {serve!r}:
    import azure.functions as func
    import function_app
    [fn] = [f for f in function_app.app.get_functions() if f.get_function_name() == "list_rollouts"]
    req = func.HttpRequest("GET", "http://localhost/api/rollouts", route_params={{}}, body=b"")
    t0 = time.perf_counter()
    response = fn.get_user_function()(req)
    result["serve_s"] = time.perf_counter() - t0
    result["status"] = response.status_code
    result["body"] = response.get_body().decode()[:300]
    result["serve_rss_mib"] = peak_mib()
result["loaded"] = sorted(
    m for m in {reported!r} if m in sys.modules or any(k.startswith(m + ".") for k in sys.modules)
)
print(json.dumps(result))
"""


def app_env(connection_string: str, table_prefix: str = "coldstart") -> dict[str, str]:
    """Settings for the function app: state and releases on Azurite, ARM on a closed loopback port (so a
    read that called ARM would fail, not pass unnoticed)."""
    return {
        "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-0000000c01d5",
        "VMSS_RESOURCE_GROUP": "cold-rg",
        "VMSS_NAME": "cold-vmss",
        "ARM_ENDPOINT": "https://127.0.0.1:9",
        "ARM_TOKEN": "cold-token",
        "StateStorage": connection_string,
        "ReleaseStorage": connection_string,
        "TickQueue": connection_string,
        "STATE_TABLE_PREFIX": table_prefix,
    }


def measure(modules: tuple[str, ...], *, serve: bool = False, env: dict[str, str] | None = None) -> dict[str, Any]:
    """One fresh interpreter importing ``modules`` (and serving GET /api/rollouts when ``serve``)."""
    code = _CHILD.format(modules=list(modules), serve=serve, reported=list(REPORTED))
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    child_env.update(env or {})
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False, cwd=REPO, env=child_env
    )
    if out.returncode != 0:
        raise RuntimeError(f"the cold-start child failed ({out.returncode}): {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@dataclass(frozen=True)
class ColdStart:
    label: str
    import_s: float
    rss_mib: float
    serve_s: float | None = None
    serve_rss_mib: float | None = None
    loaded: tuple[str, ...] = ()


def median_of(
    label: str, modules: tuple[str, ...], runs: int, *, serve: bool = False, env: dict[str, str] | None = None
) -> ColdStart:
    """The median of ``runs`` fresh interpreters (each figure's own median)."""
    results = [measure(modules, serve=serve, env=env) for _ in range(runs)]
    if serve:
        bad = [r for r in results if r.get("status") != 200]
        if bad:
            raise RuntimeError(f"GET /api/rollouts answered {bad[0].get('status')}: {bad[0].get('body')}")
    return ColdStart(
        label=label,
        import_s=statistics.median(r["import_s"] for r in results),
        rss_mib=statistics.median(r["import_rss_mib"] for r in results),
        serve_s=statistics.median(r["serve_s"] for r in results) if serve else None,
        serve_rss_mib=statistics.median(r["serve_rss_mib"] for r in results) if serve else None,
        loaded=tuple(results[-1]["loaded"]),
    )


__all__ = ["HEAVY", "REPORTED", "ColdStart", "app_env", "measure", "median_of"]
