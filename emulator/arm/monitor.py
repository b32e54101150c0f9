"""Azure Monitor, as far as the canary judge reads it: platform metrics and a Log Analytics query.

Two endpoints, in their official shapes, fed by what the emulated instances really did
(``emulator.telemetry``: each runtime's request records and CPU time; the twin's load balancer's probe
results, ``emulator.lb``):

* **Metrics - List**: ``GET {resourceUri}/providers/Microsoft.Insights/metrics?api-version=...&metricnames=
  ...&aggregation=...&interval=...&timespan=...&$filter=...`` (azure-rest-api-specs
  ``specification/monitor/resource-manager/Microsoft.Insights/stable/2024-02-01/metrics_API.json``,
  example ``examples/GetMetric.json``). A scale set has ``Percentage CPU`` (Percent, from the CPU time
  its instances used between samples), ``Network In Total`` and ``Network Out Total`` (Bytes, from the
  request and response sizes of each request served), each with the dimension ``VMName`` ("Supported
  metrics for Microsoft.Compute/virtualmachineScaleSets",
  https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-compute-virtualmachinescalesets-metrics).
  A load balancer registered with ``add_load_balancer`` has ``DipAvailability`` ("Health Probe Status",
  Count, the percentage of successful probes) with the dimension ``BackendIPAddress`` ("Supported
  metrics for Microsoft.Network/loadBalancers",
  https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-network-loadbalancers-metrics).
  ``$filter`` takes ``<dimension> eq '<value>'`` terms joined by ``or`` (one dimension) and ``and``;
  ``'*'`` splits the series by every value. Dimension names in answers are lower case, as in the
  specification's example (``$filter=Tier eq '*'`` answers ``"name": {"value": "tier"}``).
* **Log Analytics query**: ``POST /v1/workspaces/{workspaceId}/query`` with ``{"query", "timespan"}``
  (azure-rest-api-specs ``specification/operationalinsights/data-plane/Microsoft.OperationalInsights/
  stable/v1/OperationalInsights.json``, example ``examples/oms-post-example.json``); the SDK's
  ``LogsQueryClient(endpoint=<this emulator's URL>)`` sends exactly this. A workspace registered with
  ``add_workspace`` holds the table ``NginxAccess_CL`` (one row per request: Computer, Status,
  RequestTime) of every instance; the emulator evaluates the product's default query
  (``rollout.settings.DEFAULT_SIGNALS_LOGS_QUERY``) and queries registered with ``register_query``, and
  answers any other query 400 ``BadArgumentError`` (it is not a KQL engine).

Undocumented, so switches (docs/emulator.md): ``vm_name_dimension`` says what the ``VMName`` values are,
the VM name (``"vm-name"``, default: ``{scale set}_{instance id}`` for Uniform, the VM name for Flexible)
or the computer name (``"computer-name"``); ``logs_dynamic`` says how a ``dynamic`` cell travels, as JSON
text (``"string"``, default) or as a JSON value (``"json"``).
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from emulator.arm import render
from emulator.arm.model import JSON, ArmError, Instance, ScaleSet
from emulator.arm.routes import Answer, Request
from emulator.telemetry import ObservableRuntime, RequestRecord

if TYPE_CHECKING:
    from emulator.arm.emulator import ArmEmulator

VM_NAME_DIMENSION_VALUES = ("vm-name", "computer-name")
LOGS_DYNAMIC_VALUES = ("string", "json")
MAX_POINTS = 50_000  # buckets x metrics in one answer
MAX_LATENCIES = 10_000  # make_list(..., 10000) in the default query
NGINX_TABLE = "NginxAccess_CL"
_VMSS_RESOURCE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Compute/"
    r"virtualMachineScaleSets/(?P<name>[^/]+)$",
    re.IGNORECASE,
)
_FILTER_TERM = re.compile(r"^\s*(?P<dim>[A-Za-z][A-Za-z0-9_]*)\s+eq\s+'(?P<value>[^']*)'\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$")


class ProbeHistory(Protocol):
    def probe_history(self, start: float, end: float) -> dict[str, list[tuple[float, bool]]]: ...


@dataclass(frozen=True)
class MetricSpec:
    name: str
    localized: str
    unit: str
    description: str
    dimension: str


_VMSS_METRICS: dict[str, MetricSpec] = {
    m.name.lower(): m
    for m in (
        MetricSpec(
            "Percentage CPU",
            "Percentage CPU",
            "Percent",
            "The percentage of allocated compute units that are currently in use by the Virtual Machine(s)",
            "VMName",
        ),
        MetricSpec(
            "Network In Total",
            "Network In Total",
            "Bytes",
            "The number of bytes received on all network interfaces by the Virtual Machine(s) (Incoming Traffic)",
            "VMName",
        ),
        MetricSpec(
            "Network Out Total",
            "Network Out Total",
            "Bytes",
            "The number of bytes out on all network interfaces by the Virtual Machine(s) (Outgoing Traffic)",
            "VMName",
        ),
    )
}
_LB_METRICS: dict[str, MetricSpec] = {
    "dipavailability": MetricSpec(
        "DipAvailability",
        "Health Probe Status",
        "Count",
        "Average Load Balancer health probe status per time duration",
        "BackendIPAddress",
    )
}
_AGGREGATIONS = ("average", "minimum", "maximum", "total", "count")


def parse_duration(text: str) -> timedelta:
    """A small ISO 8601 duration (``PT1M``, ``PT6H``, ``P1D``, ``P1DT12H``) -> timedelta; ValueError else."""
    m = _DURATION.match(text.strip().upper())
    if m is None or not any(m.groupdict().values()):
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    return timedelta(
        days=int(m["d"] or 0), hours=int(m["h"] or 0), minutes=int(m["m"] or 0), seconds=float(m["s"] or 0)
    )


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_timespan(text: str | None, now: datetime, default: timedelta) -> tuple[datetime, datetime]:
    """``start/end``, ``start/duration``, ``duration/end`` or ``duration`` (ending now); None: ``default``
    ending now. ValueError when malformed or empty."""
    if text is None or not text.strip():
        return now - default, now
    head, sep, tail = text.partition("/")
    try:
        if not sep:
            start, end = now - parse_duration(head), now
        elif head.strip().upper().startswith("P"):
            end = _moment(tail)
            start = end - parse_duration(head)
        elif tail.strip().upper().startswith("P"):
            start = _moment(head)
            end = start + parse_duration(tail)
        else:
            start, end = _moment(head), _moment(tail)
    except ValueError as err:
        raise ValueError(f"invalid timespan {text!r}: {err}") from err
    if end <= start:
        raise ValueError(f"invalid timespan {text!r}: it ends before it starts")
    return start, end


def parse_filter(text: str | None) -> dict[str, set[str]]:
    """``VMName eq '*'``, ``A eq 'x' or A eq 'y'``, ``A eq '*' and B eq 'z'`` -> {dimension (lower): values}."""
    if text is None or not text.strip():
        return {}
    out: dict[str, set[str]] = {}
    for clause in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
        names: set[str] = set()
        for term in re.split(r"\s+or\s+", clause.strip().strip("()"), flags=re.IGNORECASE):
            m = _FILTER_TERM.match(term)
            if m is None:
                raise ValueError(f"unsupported $filter term {term!r} (expected <dimension> eq '<value>')")
            dim = m["dim"].lower()
            names.add(dim)
            out.setdefault(dim, set()).add(m["value"])
        if len(names) > 1:
            raise ValueError(f"'or' joins terms of one dimension only: {clause!r}")
    return out


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bad_request(message: str) -> ArmError:
    return ArmError(400, "BadRequest", message)


def _aggregate(values: list[float], aggregations: Iterable[str]) -> JSON:
    out: JSON = {}
    for agg in aggregations:
        if agg == "count":
            out["count"] = float(len(values))
        elif values:
            if agg == "average":
                out["average"] = sum(values) / len(values)
            elif agg == "minimum":
                out["minimum"] = min(values)
            elif agg == "maximum":
                out["maximum"] = max(values)
            elif agg == "total":
                out["total"] = float(sum(values))
    return out


class MonitorApi:
    """The two endpoints and their data; ``ArmEmulator.monitor``."""

    def __init__(self, emu: ArmEmulator, *, cpu_sample_s: float = 2.0) -> None:
        self._emu = emu
        self.cpu_sample_s = cpu_sample_s
        self.vm_name_dimension = "vm-name"
        self.logs_dynamic = "string"
        self._lock = threading.Lock()
        self._balancers: dict[str, ProbeHistory] = {}
        self._workspaces: set[str] = set()
        self._queries: dict[str, Callable[[datetime, datetime], JSON]] = {}
        # CPU samples per instance (its vm_id): (epoch seconds, cumulative CPU seconds).
        self._cpu: dict[str, list[tuple[float, float]]] = {}
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    # -- control ---------------------------------------------------------------------------------
    def choose(self, *, vm_name_dimension: str | None = None, logs_dynamic: str | None = None) -> None:
        """Set an undocumented-behaviour switch (None: unchanged); an unknown alternative is a ValueError
        and changes nothing."""
        if vm_name_dimension is not None and vm_name_dimension not in VM_NAME_DIMENSION_VALUES:
            raise ValueError(f"vm_name_dimension must be one of {VM_NAME_DIMENSION_VALUES}, not {vm_name_dimension!r}")
        if logs_dynamic is not None and logs_dynamic not in LOGS_DYNAMIC_VALUES:
            raise ValueError(f"logs_dynamic must be one of {LOGS_DYNAMIC_VALUES}, not {logs_dynamic!r}")
        if vm_name_dimension is not None:
            self.vm_name_dimension = vm_name_dimension
        if logs_dynamic is not None:
            self.logs_dynamic = logs_dynamic

    def configure(self, body: Mapping[str, Any]) -> JSON:
        """The admin API's ``POST /_admin/monitor``: ``{"vm_name_dimension"?, "logs_dynamic"?, "workspace"?}``;
        unknown keys or values are a ValueError (400)."""
        unknown = set(body) - {"vm_name_dimension", "logs_dynamic", "workspace"}
        if unknown:
            raise ValueError(f"unknown monitor settings {sorted(unknown)}")
        workspace = body.get("workspace")
        if workspace is not None and not (isinstance(workspace, str) and re.fullmatch(r"[0-9A-Fa-f-]{36}", workspace)):
            raise ValueError(f"workspace must be a workspace id (a GUID), not {workspace!r}")
        self.choose(vm_name_dimension=body.get("vm_name_dimension"), logs_dynamic=body.get("logs_dynamic"))
        if workspace is not None:
            self.add_workspace(workspace)
        return self.describe()

    def describe(self) -> JSON:
        with self._lock:
            return {
                "vm_name_dimension": self.vm_name_dimension,
                "logs_dynamic": self.logs_dynamic,
                "workspaces": sorted(self._workspaces),
                "load_balancers": sorted(self._balancers),
            }

    def add_load_balancer(self, resource_id: str, balancer: ProbeHistory) -> None:
        """Serve ``DipAvailability`` of ``resource_id`` from ``balancer``'s probe results."""
        with self._lock:
            self._balancers["/" + resource_id.strip("/").lower()] = balancer

    def add_workspace(self, workspace_id: str) -> None:
        with self._lock:
            self._workspaces.add(workspace_id.lower())

    def register_query(self, query: str, answer: Callable[[datetime, datetime], JSON]) -> None:
        """Answer ``query`` (compared with its whitespace collapsed) with ``answer(start, end)``: a table."""
        with self._lock:
            self._queries[" ".join(query.split())] = answer

    def start(self) -> None:
        self._stop.clear()
        self._sampler = threading.Thread(target=self._sample_loop, name="monitor-cpu-sampler", daemon=True)
        self._sampler.start()

    def stop(self) -> None:
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(timeout=5)
        self._sampler = None

    # -- CPU sampling ----------------------------------------------------------------------------
    def _sample_loop(self) -> None:
        while not self._stop.is_set():
            self.sample_cpu()
            self._stop.wait(self.cpu_sample_s)

    def sample_cpu(self) -> None:
        """One CPU sample of every instance whose runtime reports its CPU time; the samples of instances
        that are gone are dropped."""
        at = self._emu.clock.time()
        present: set[str] = set()
        for scale_set in self._emu.fleet.scale_sets():
            with self._emu.fleet.lock:
                instances = list(scale_set.instances.values())
            for inst in instances:
                present.add(inst.vm_id)
                runtime = inst.runtime
                if not isinstance(runtime, ObservableRuntime):
                    continue
                used = runtime.cpu_seconds()
                if used is None:
                    continue
                with self._lock:
                    samples = self._cpu.setdefault(inst.vm_id, [])
                    samples.append((at, used))
                    del samples[:-20_000]
        with self._lock:
            for gone in set(self._cpu) - present:
                del self._cpu[gone]

    def _cpu_percent(self, inst: Instance, start: float, end: float) -> list[tuple[float, float]]:
        """(time, percent) between consecutive samples ending in the window; a restart (CPU time going
        down) counts from 0."""
        with self._lock:
            samples = list(self._cpu.get(inst.vm_id, ()))
        out: list[tuple[float, float]] = []
        for (t0, c0), (t1, c1) in zip(samples, samples[1:], strict=False):
            if start <= t1 < end and t1 > t0:
                used = c1 - c0 if c1 >= c0 else c1
                out.append((t1, max(0.0, min(100.0, 100.0 * used / (t1 - t0)))))
        return out

    # -- Metrics - List --------------------------------------------------------------------------
    def vm_name(self, scale_set: ScaleSet, inst: Instance) -> str:
        if self.vm_name_dimension == "computer-name":
            return render.computer_name(scale_set, inst)
        return inst.instance_id if scale_set.flexible else f"{scale_set.name}_{inst.instance_id}"

    def metrics(self, req: Request, m: re.Match[str]) -> Answer:
        resource = f"/subscriptions/{m['sub']}{m['resource_path']}".rstrip("/")
        if "api-version" not in req.query:
            raise ArmError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        vmss = _VMSS_RESOURCE.match(resource)
        with self._lock:
            balancer = self._balancers.get(resource.lower())
        if vmss is not None:
            scale_set = self._emu.fleet.get(vmss["rg"], vmss["name"])
            catalogue, namespace = _VMSS_METRICS, "Microsoft.Compute/virtualMachineScaleSets"
        elif balancer is not None:
            scale_set, catalogue, namespace = None, _LB_METRICS, "Microsoft.Network/loadBalancers"
        else:
            raise ArmError(
                404, "ResourceNotFound", f"The resource '{resource}' was not found (no metrics in this emulator)."
            )
        wanted_namespace = req.query.get("metricnamespace")
        if wanted_namespace and wanted_namespace.lower() != namespace.lower():
            raise _bad_request(f"Metric namespace {wanted_namespace!r} is not valid for {namespace}.")
        names = [n.strip() for n in (req.query.get("metricnames") or "").split(",") if n.strip()]
        if not names:
            raise _bad_request("metricnames is required by this emulator (one or more, comma-separated).")
        specs = []
        for name in names:
            spec = catalogue.get(name.lower())
            if spec is None:
                raise _bad_request(
                    f"Failed to find metric configuration for provider: {namespace}, metric: {name}. "
                    f"Valid metrics: {', '.join(s.name for s in catalogue.values())}"
                )
            specs.append(spec)
        aggregations = [a.strip().lower() for a in (req.query.get("aggregation") or "average").split(",") if a.strip()]
        bad = [a for a in aggregations if a not in _AGGREGATIONS]
        if bad:
            raise _bad_request(f"Unknown aggregation {bad[0]!r}; valid: {', '.join(_AGGREGATIONS)}")
        try:
            start, end = parse_timespan(req.query.get("timespan"), self._emu.clock.now(), timedelta(hours=1))
            interval_text = (req.query.get("interval") or "PT1M").strip()
            grain = end - start if interval_text.upper() == "FULL" else parse_duration(interval_text)
            filters = parse_filter(req.query.get("$filter"))
        except ValueError as err:
            raise _bad_request(str(err)) from err
        if grain <= timedelta(0):
            raise _bad_request(f"interval {interval_text!r} must be positive")
        dims = {s.dimension.lower() for s in specs}
        unknown = set(filters) - dims
        if unknown:
            raise _bad_request(
                f"Metric does not support the dimension(s) {sorted(unknown)} (supported: {sorted(dims)})"
            )
        buckets = self._buckets(start, end, grain, interval_text.upper() == "FULL")
        if len(buckets) * len(specs) > MAX_POINTS:
            raise _bad_request(f"The query asks for {len(buckets) * len(specs)} data points; at most {MAX_POINTS}.")
        value = [
            self._metric_json(resource, spec, scale_set, balancer, start, end, buckets, aggregations, filters)
            for spec in specs
        ]
        body = {
            "cost": len(buckets) * len(specs),
            "timespan": f"{_iso(start)}/{_iso(end)}",
            "interval": interval_text.upper() if interval_text.upper() == "FULL" else interval_text,
            "value": value,
            "namespace": namespace,
            "resourceregion": self._emu.region,
        }
        return 200, {}, body

    @staticmethod
    def _buckets(start: datetime, end: datetime, grain: timedelta, full: bool) -> list[tuple[datetime, datetime]]:
        if full:
            return [(start, end)]
        step = grain.total_seconds()
        first = datetime.fromtimestamp(math.floor(start.timestamp() / step) * step, UTC)
        out: list[tuple[datetime, datetime]] = []
        at = first
        while at < end and len(out) <= MAX_POINTS:
            out.append((at, at + grain))
            at += grain
        return out

    def _samples(
        self, spec: MetricSpec, scale_set: ScaleSet | None, balancer: ProbeHistory | None, start: float, end: float
    ) -> dict[str, list[tuple[float, float]]]:
        """{dimension value: (epoch seconds, value)} of ``spec`` in ``[start, end)``."""
        out: dict[str, list[tuple[float, float]]] = {}
        if balancer is not None:
            for address, probes in balancer.probe_history(start, end).items():
                out[address] = [(t, 100.0 if ok else 0.0) for t, ok in probes]
            return out
        assert scale_set is not None
        for inst, runtime in self._observable(scale_set):
            key = self.vm_name(scale_set, inst)
            if spec.name == "Percentage CPU":
                points = self._cpu_percent(inst, start, end)
            else:
                records: list[RequestRecord] = runtime.requests_between(start, end)
                size: Callable[[RequestRecord], int] = (
                    (lambda r: r.bytes_in) if spec.name == "Network In Total" else (lambda r: r.bytes_out)
                )
                points = [(r.at, float(size(r))) for r in records]
            if points:
                out[key] = points
        return out

    def _metric_json(
        self,
        resource: str,
        spec: MetricSpec,
        scale_set: ScaleSet | None,
        balancer: ProbeHistory | None,
        start: datetime,
        end: datetime,
        buckets: list[tuple[datetime, datetime]],
        aggregations: list[str],
        filters: Mapping[str, set[str]],
    ) -> JSON:
        samples = self._samples(spec, scale_set, balancer, start.timestamp(), end.timestamp())
        wanted = filters.get(spec.dimension.lower())
        if wanted is None:  # not split: one series over every dimension value, without metadatavalues
            groups: dict[str | None, list[tuple[float, float]]] = {None: [p for ps in samples.values() for p in ps]}
        else:
            groups = {k: v for k, v in samples.items() if "*" in wanted or k in wanted}
        timeseries = []
        for key, points in sorted(groups.items(), key=lambda kv: kv[0] or ""):
            data = []
            for b_start, b_end in buckets:
                values = [v for t, v in points if b_start.timestamp() <= t < b_end.timestamp()]
                data.append({"timeStamp": _iso(b_start), **_aggregate(values, aggregations)})
            meta = (
                []
                if key is None
                else [
                    {"name": {"value": spec.dimension.lower(), "localizedValue": spec.dimension.lower()}, "value": key}
                ]
            )
            timeseries.append({"metadatavalues": meta, "data": data})
        return {
            "id": f"{resource}/providers/Microsoft.Insights/metrics/{spec.name}",
            "type": "Microsoft.Insights/metrics",
            "name": {"value": spec.name, "localizedValue": spec.localized},
            "displayDescription": spec.description,
            "unit": spec.unit,
            "timeseries": timeseries,
            "errorCode": "Success",
        }

    # -- Log Analytics query ---------------------------------------------------------------------
    def logs_query(self, req: Request, m: re.Match[str]) -> Answer:
        workspace = m.group("workspace")
        with self._lock:
            known = workspace.lower() in self._workspaces
        if not known:
            raise ArmError(404, "WorkspaceNotFoundError", f"The workspace {workspace} could not be found.")
        body = req.body if isinstance(req.body, Mapping) else {}
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ArmError(400, "BadArgumentError", "The request had some invalid properties: 'query' is required.")
        timespan = body.get("timespan")
        try:
            start, end = parse_timespan(
                timespan if isinstance(timespan, str) else None, self._emu.clock.now(), timedelta(days=1)
            )
        except ValueError as err:
            raise ArmError(400, "BadArgumentError", str(err)) from err
        normalised = " ".join(query.split())
        from rollout.settings import DEFAULT_SIGNALS_LOGS_QUERY

        with self._lock:
            registered = self._queries.get(normalised)
        if registered is not None:
            table = registered(start, end)
        elif normalised == " ".join(DEFAULT_SIGNALS_LOGS_QUERY.split()):
            table = self.nginx_summary(start, end)
        else:
            raise ArmError(
                400,
                "BadArgumentError",
                "The emulator evaluates only the default signals query and registered queries, not: " + query[:200],
            )
        return 200, {}, {"tables": [table]}

    def _observable(self, scale_set: ScaleSet) -> list[tuple[Instance, ObservableRuntime]]:
        """The scale set's instances, in order, whose runtime reports what they served (and their CPU)."""
        with self._emu.fleet.lock:
            instances = scale_set.instances_in_order()
        return [(inst, inst.runtime) for inst in instances if isinstance(inst.runtime, ObservableRuntime)]

    def nginx_summary(self, start: datetime, end: datetime) -> JSON:
        """The default query over ``NginxAccess_CL``: one row per computer with requests in the window."""
        rows: list[list[Any]] = []
        for scale_set in self._emu.fleet.scale_sets():
            for inst, runtime in self._observable(scale_set):
                records = runtime.requests_between(start.timestamp(), end.timestamp())
                if not records:
                    continue  # summarize makes no group without rows
                latencies = [round(r.seconds * 1000.0, 3) for r in records[:MAX_LATENCIES]]
                rows.append(
                    [
                        render.computer_name(scale_set, inst),
                        len(records),
                        sum(1 for r in records if r.status >= 500),
                        json.dumps(latencies) if self.logs_dynamic == "string" else latencies,
                    ]
                )
        return {
            "name": "PrimaryResult",
            "columns": [
                {"name": "Computer", "type": "string"},
                {"name": "requests", "type": "long"},
                {"name": "errors", "type": "long"},
                {"name": "latencies_ms", "type": "dynamic"},
            ],
            "rows": rows,
        }
