"""Per-instance signals Azure already collects, as the canary judge reads them.

A ``SignalSource`` (``rollout.ports``) answers, for a window of time, what each instance did: requests
served, how many failed, their latencies, and platform figures (CPU, the load balancer's health probe,
the Application Health extension). Adapters read Azure Monitor metrics, the load balancer's probe
status and a Log Analytics query; the judge (``rollout.judge``) compares the canary's signals with an
equal number of baseline instances over the same window. A figure a source does not have is ``None``
(or empty), never a guessed zero."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class InstanceSignals:
    """What one instance did over one window ``[start, end)``."""

    instance_id: str
    start: datetime
    end: datetime
    requests: int | None = None  # requests served in the window (None: the source does not count them)
    errors: int | None = None  # of those, server errors (HTTP 5xx)
    latencies_ms: tuple[float, ...] = ()  # one value per request (or per sample) in the window
    cpu_percent: float | None = None  # Azure Monitor "Percentage CPU", mean over the window
    lb_probe_up: bool | None = None  # the load balancer's health probe, last status in the window
    vm_health: str | None = None  # the Application Health extension's vmHealth state
    sources: tuple[str, ...] = ()  # which adapters contributed ("metrics", "logs", "lb", ...)
    network_in_bytes: float | None = None  # Azure Monitor "Network In Total", summed over the window
    network_out_bytes: float | None = None  # Azure Monitor "Network Out Total", summed over the window
