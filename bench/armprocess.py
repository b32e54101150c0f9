"""The ARM emulator in a process of its own, for the benchmarks that keep the controller apart from it
(``bench.perf``, ``bench.waves``): start and stop it, call its admin API, count its requests by operation."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import requests

REPO = Path(__file__).resolve().parents[1]

# ARM request paths -> the operation a report names them by (first match wins; the query is left out).
OPERATIONS = (
    (re.compile(r"/operations/", re.I), "poll an operation"),
    (re.compile(r"/extensions/[^/]+$", re.I), "extension"),
    (re.compile(r"/manualupgrade$", re.I), "manualupgrade"),
    (re.compile(r"/reimage$", re.I), "reimage"),
    (re.compile(r"/virtualMachines/[^/]+/instanceView$", re.I), "instance view (one VM)"),
    (re.compile(r"/virtualMachines$", re.I), "list VMs (instance view)"),
    (re.compile(r"/networkInterfaces$", re.I), "list NICs"),
    (re.compile(r"/virtualMachineScaleSets/[^/]+$", re.I), "scale set"),
)


def operation(method: str, path: str) -> str:
    path = path.split("?", 1)[0]
    for pattern, name in OPERATIONS:
        if pattern.search(path):
            return f"{method} {name}"
    return f"{method} {path}"


@dataclass
class ArmProcess:
    """A running ``python -m emulator serve`` (or a benchmark's own launcher of it)."""

    ADMIN_TIMEOUT: ClassVar[float] = 60.0

    process: subprocess.Popen[str]
    url: str
    ca_bundle: str
    subscription_id: str
    token: str  # the bearer token the emulator was started with

    def admin(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        response = requests.request(
            method,
            f"{self.url}/_admin/{path}",
            headers={"Authorization": f"Bearer {self.token}"},
            json=body,
            verify=self.ca_bundle,
            timeout=timeout or self.ADMIN_TIMEOUT,
        )
        response.raise_for_status()
        return response.json() if response.content else None

    def requests_by_operation(self) -> tuple[Counter[str], Counter[str]]:
        """Every request the emulator logged (polls included), and those it answered 429, by operation."""
        records = self.admin("GET", "requests?include_polls=true", timeout=300)["requests"]
        by_op: Counter[str] = Counter()
        throttled: Counter[str] = Counter()
        for r in records:
            op = operation(r["method"], r["path"])
            by_op[op] += 1
            if r["status"] == 429:
                throttled[op] += 1
        return by_op, throttled


@contextlib.contextmanager
def arm_process(
    launcher: Sequence[str], args: Sequence[str], state_dir: Path, token: str
) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    """``python -m <launcher> <args>`` with ``--token``, ``--state-dir`` and ``--info-file`` added; yields the
    process and the info file it wrote once it serves (url, ca_bundle, subscription_id). Stops it with SIGTERM.
    A start that fails says why with the tail of the emulator's log; so does any failure after the emulator
    itself died."""
    state_dir.mkdir(parents=True, exist_ok=True)
    info_file = state_dir / "info.json"
    log_path = state_dir / "emulator.log"
    cmd = [
        *(sys.executable, "-m", *launcher, "--token", token, "--state-dir", str(state_dir)),
        *args,
        *("--info-file", str(info_file)),
    ]
    with log_path.open("w") as log:
        process = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 60
            while not info_file.exists() or not info_file.read_text().endswith("\n"):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    raise RuntimeError(
                        f"the ARM emulator did not start (exit code {process.poll()}): {log_path.read_text()[-2000:]}"
                    )
                time.sleep(0.1)
            yield process, json.loads(info_file.read_text())
        except BaseException:
            if process.poll() is not None:  # the emulator itself failed: say how
                log.flush()
                print(log_path.read_text()[-4000:], file=sys.stderr)
            raise
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
