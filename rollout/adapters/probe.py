"""HTTP probes of each instance's private IP, concurrently, with a hard time bound per probe.

The load balancer hides individual instances (the walkthrough's point: "you do not know the service
status for an individual node through the public access point"), so the controller probes every
instance directly over the virtual network, the way the LB probe would: path, port, expected status
and an optional body pattern. A tick probes the whole fleet in parallel, so its duration is about one
probe timeout whatever the fleet size (bounded by ``max_workers``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import requests

from rollout.model import ProbeResult
from rollout.ports import ProbeTarget
from rollout.settings import ProbeSettings

MAX_BODY_BYTES = 64 * 1024


class HttpProber:
    """Implements ``rollout.ports.Prober`` with ``requests``."""

    def __init__(self, spec: ProbeSettings | None = None, *, max_workers: int = 32) -> None:
        """``spec``: what to probe (``PROBE_*``, ``rollout.settings.ProbeSettings``; its defaults when None)."""
        spec = spec or ProbeSettings()
        self.path = spec.path
        self.port = spec.port
        self.expect_status = spec.expect_status
        self.pattern = re.compile(spec.body_pattern) if spec.body_pattern else None
        self.timeout = spec.timeout_seconds
        self.max_workers = max_workers

    def probe(self, targets: Sequence[ProbeTarget]) -> dict[str, ProbeResult]:
        if not targets:
            return {}
        workers = min(self.max_workers, len(targets))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="probe") as pool:
            results = pool.map(self._probe_one, targets)
            return {t.instance_id: r for t, r in zip(targets, results, strict=True)}

    def url_for(self, address: str) -> str:
        host = f"[{address}]" if ":" in address else address
        return f"http://{host}:{self.port}{self.path}"

    def _probe_one(self, target: ProbeTarget) -> ProbeResult:
        url = self.url_for(target.address)
        started = time.monotonic()
        try:
            # A fresh connection each time (no session): a probe must see what a new client sees.
            with requests.get(url, timeout=self.timeout, stream=True, allow_redirects=False) as response:
                body = response.raw.read(MAX_BODY_BYTES, decode_content=True) if self.pattern else b""
                elapsed_ms = (time.monotonic() - started) * 1000
                if response.status_code != self.expect_status:
                    return ProbeResult(
                        False, f"{response.status_code} {response.reason} (expected {self.expect_status})"
                    )
                if self.pattern is not None and not self.pattern.search(body.decode("utf-8", "replace")):
                    return ProbeResult(False, f"body did not match {self.pattern.pattern!r}")
                return ProbeResult(True, f"{response.status_code} in {elapsed_ms:.0f} ms", elapsed_ms)
        except requests.Timeout:
            return ProbeResult(False, f"timed out after {self.timeout:g} s")
        except requests.ConnectionError as exc:
            return ProbeResult(False, f"connection failed: {_root_cause(exc)}")
        except requests.RequestException as exc:
            return ProbeResult(False, f"probe error: {exc}")


def _root_cause(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Connection refused", "timed out", "No route to host", "Name or service not known"):
        if marker in text:
            return marker.lower()
    return text[:200]
