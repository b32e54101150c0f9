"""``SignalSource`` adapters: what Azure Monitor already knows about each instance.

Three sources, each optional, merged by ``CompositeSignalSource``:

* ``ScaleSetMetricsSource``: the scale set's platform metrics split by instance (``Percentage CPU``,
  ``Network In Total``, ``Network Out Total``) through Metrics - List
  (``GET {resourceUri}/providers/Microsoft.Insights/metrics``, api-version 2024-02-01, azure-rest-api-specs
  ``specification/monitor/resource-manager/Microsoft.Insights/stable/2024-02-01/metrics_API.json``). The
  split is the ``VMName`` dimension, which every one of these metrics has on
  ``Microsoft.Compute/virtualMachineScaleSets`` ("Supported metrics for
  Microsoft.Compute/virtualmachineScaleSets",
  https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-compute-virtualmachinescalesets-metrics).
* ``LoadBalancerProbeSource``: the load balancer's ``DipAvailability`` ("Health Probe Status": Average,
  dimensions ProtocolType, BackendPort, FrontendIPAddress, FrontendPort, BackendIPAddress; "Supported
  metrics for Microsoft.Network/loadBalancers",
  https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-network-loadbalancers-metrics),
  split by ``BackendIPAddress`` and mapped to instances by their private IPs.
* ``LogAnalyticsSource``: a KQL query over a Log Analytics workspace (``POST /v1/workspaces/{id}/query``,
  azure-rest-api-specs ``specification/operationalinsights/data-plane/Microsoft.OperationalInsights/
  stable/v1/OperationalInsights.json``), e.g. nginx access logs shipped by the Azure Monitor Agent into a
  custom table. The query is a setting (``DEFAULT_LOGS_QUERY``); its result must have one row per
  instance with the columns ``Computer``, ``requests``, ``errors`` and ``latencies_ms``.

Design decisions
----------------
* **Which SDK.** ``MetricsQueryClient`` is gone from azure-monitor-query 2.0.0: "Functionality provided
  by MetricsQueryClient can be accessed through the azure-mgmt-monitor package"; its successor
  azure-monitor-querymetrics only has the batch client of the regional data plane (azure-sdk-for-python,
  ``sdk/monitor/azure-monitor-query/CHANGELOG.md``, 2.0.0). So metrics go through azure-mgmt-monitor's
  ``MonitorManagementClient.metrics.list`` (the same ARM endpoint, credential and CA bundle as the
  compute adapter) and logs through azure-monitor-query's ``LogsQueryClient.query_workspace``.
* **Raw REST shapes in, domain values out.** Each client hands back the response JSON (``cls=`` or the
  result's tables), and the pure functions below (``metrics_by_instance``, ``cpu_signals``,
  ``probe_signals``, ``logs_signals``) map the documented shape to ``InstanceSignals``: unit-testable with
  the specification's example responses.
* **Instance names.** A ``VMName`` value, or a ``Computer`` column, names an instance in one of the ways
  Azure names scale set VMs ("Understand names and instance IDs for Azure Virtual Machine Scale Set
  VMs", https://learn.microsoft.com/azure/virtual-machine-scale-sets/virtual-machine-scale-sets-instance-ids):
  ``{scale-set-name}_{instance-id}`` (Uniform VM name), the VM name itself (Flexible: the instance id
  is the VM name), or the computer name ``{computer-name-prefix}{base-36 instance id, six digits}``.
  Which of them ``VMName`` carries is not documented; ``instance_for_name`` accepts each.
* **Lazy imports.** ``azure.mgmt.monitor`` and ``azure.monitor.query`` are imported when a source first
  reads, never when the function app starts (cold start).
* **Bounded retries.** One retry, a short back-off, and never a sleep through a long ``Retry-After``
  (the compute adapter's policy): a throttled source answers ``TransientError`` at once and the judge
  decides on the others.
* **One error vocabulary.** An SDK error becomes a ``rollout.ports`` error (``TransientError`` for what a
  later tick may not see again); the composite keeps what the other sources answered.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rollout.adapters.lazy import LazyClient
from rollout.model import FleetView
from rollout.ports import PortError, SignalSource, TransientError
from rollout.settings import DEFAULT_SIGNALS_LOGS_ENDPOINT, DEFAULT_SIGNALS_LOGS_QUERY
from rollout.signals import InstanceSignals

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

Json = Mapping[str, Any]

METRICS_API_VERSION = "2024-02-01"  # azure-mgmt-monitor 7.0.0's Metrics - List default
CPU_METRIC = "Percentage CPU"
NETWORK_IN_METRIC = "Network In Total"
NETWORK_OUT_METRIC = "Network Out Total"
SCALE_SET_METRICS: tuple[str, ...] = (CPU_METRIC, NETWORK_IN_METRIC, NETWORK_OUT_METRIC)
VM_NAME_DIMENSION = "VMName"
PROBE_METRIC = "DipAvailability"
BACKEND_IP_DIMENSION = "BackendIPAddress"
# A backend counts as up when the last minute's health probe status (the percentage of successful
# probes) is at least this.
PROBE_UP_PERCENT = 50.0
DEFAULT_LOGS_ENDPOINT = DEFAULT_SIGNALS_LOGS_ENDPOINT
LOGS_INSTANCE_COLUMN = "Computer"
# The default query (rollout.settings.DEFAULT_SIGNALS_LOGS_QUERY): nginx access log lines in a custom
# table NginxAccess_CL (the Azure Monitor Agent's text-log collection writes TimeGenerated, Computer and
# RawData; a transformation parses RawData into Status and RequestTime, in seconds). The window is the
# query's timespan, not a where clause.
DEFAULT_LOGS_QUERY = DEFAULT_SIGNALS_LOGS_QUERY


# --------------------------------------------------------------------------------------------------
# Instance names
# --------------------------------------------------------------------------------------------------

_BASE36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def base36(number: int, width: int = 6) -> str:
    """``85`` -> ``"00002D"``: the instance id part of a Uniform scale set VM's computer name."""
    digits = ""
    while True:
        number, rest = divmod(number, 36)
        digits = _BASE36[rest] + digits
        if number == 0:
            break
    return digits.rjust(width, "0")


def instance_for_name(
    name: str, instance_ids: Iterable[str], scale_set_name: str, computer_names: Mapping[str, str] | None = None
) -> str | None:
    """The instance of ``instance_ids`` that ``name`` (a ``VMName`` value, a ``Computer``) names, or None.

    Accepted: the instance id itself (a Flexible VM name), ``{scale set}_{instance id}`` (a Uniform VM
    name), a computer name and a VM's resource id (``.../virtualMachineScaleSets/{scale set}/virtualMachines/
    {instance id}`` for Uniform, ``.../virtualMachines/{VM name}`` for Flexible). Compared without regard to
    case (Azure Monitor lower-cases dimension values it reports).

    A computer name is matched exactly against ``computer_names`` (computer name -> instance id, from the
    observation of the scale set) when given: a Log Analytics workspace may hold the logs of other scale
    sets, whose computer names end in the same six base-36 digits. Without it (the scale set's own metrics,
    where every value is one of its instances) ``{prefix}{six base-36 digits of the instance id}`` is read
    as a Uniform computer name."""
    ids = {i.lower(): i for i in instance_ids}
    low = name.strip().lower()
    if "/" in low:  # a VM's resource id (a _ResourceId column): .../virtualMachines/<instance id or VM name>
        parts = low.strip("/").split("/")
        for i, part in enumerate(parts[:-1]):
            if part == "virtualmachines":
                owner = parts[i - 2 : i] if i >= 2 else []
                if owner and owner[0] == "virtualmachinescalesets" and owner[1] != scale_set_name.lower():
                    return None  # an instance of another scale set
                return ids.get(parts[i + 1])
        return None
    if low in ids:
        return ids[low]
    prefix = scale_set_name.lower() + "_"
    if low.startswith(prefix) and low[len(prefix) :] in ids:
        return ids[low[len(prefix) :]]
    if computer_names is not None:
        named = {k.lower(): v for k, v in computer_names.items()}.get(low)
        return ids.get(named.lower()) if named is not None else None
    tail = low[-6:]
    if len(low) > 6 and all(c in _BASE36.lower() for c in tail):
        by_computer = {base36(int(i)).lower(): i for i in ids.values() if i.isdigit()}
        return by_computer.get(tail)
    return None


# --------------------------------------------------------------------------------------------------
# Pure mapping: Metrics - List response -> per-instance values
# --------------------------------------------------------------------------------------------------


def _metric_name(metric: Json) -> str:
    name = metric.get("name")
    if isinstance(name, Mapping):
        return str(name.get("value") or "")
    return str(name or "")


def _dimension(series: Json, dimension: str) -> str | None:
    """The value of ``dimension`` in a time series' ``metadatavalues`` (names compared without case:
    the service answers ``tier`` to a ``$filter`` on ``Tier``, see the specification's GetMetric.json)."""
    for meta in series.get("metadatavalues") or ():
        name = meta.get("name")
        key = name.get("value") if isinstance(name, Mapping) else name
        if str(key or "").lower() == dimension.lower():
            value = meta.get("value")
            return None if value is None else str(value)
    return None


@dataclass(frozen=True)
class MetricSeries:
    """One metric's data points for one dimension value: (timeStamp, aggregate) pairs, null points out."""

    metric: str
    points: tuple[tuple[datetime, float], ...]


def _timestamp(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def metrics_by_dimension(body: Json, dimension: str, aggregation: str) -> dict[str, list[MetricSeries]]:
    """A Metrics - List response -> {dimension value: its series}, one per metric that has data.

    ``aggregation`` is the field read from each data point (``average``, ``total``, ...). A metric whose
    ``errorCode`` is not ``Success`` and a series without the dimension are skipped."""
    out: dict[str, list[MetricSeries]] = {}
    for metric in body.get("value") or ():
        if not isinstance(metric, Mapping):
            continue
        error = metric.get("errorCode")
        if error not in (None, "", "Success"):
            continue
        name = _metric_name(metric)
        for series in metric.get("timeseries") or ():
            if not isinstance(series, Mapping):
                continue
            key = _dimension(series, dimension)
            if key is None:
                continue
            points: list[tuple[datetime, float]] = []
            for point in series.get("data") or ():
                stamp = _timestamp(point.get("timeStamp")) if isinstance(point, Mapping) else None
                value = _number(point.get(aggregation)) if isinstance(point, Mapping) else None
                if stamp is not None and value is not None:
                    points.append((stamp, value))
            out.setdefault(key, []).append(MetricSeries(name, tuple(sorted(points))))
    return out


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def scale_set_signals(
    body: Json,
    instance_ids: Sequence[str],
    scale_set_name: str,
    start: datetime,
    end: datetime,
) -> dict[str, InstanceSignals]:
    """The scale set's Metrics - List response (``VMName eq '*'``, aggregation average and total) ->
    ``InstanceSignals`` with ``cpu_percent`` (mean of the averages) and the network bytes (sum of the
    totals) of each instance named in ``instance_ids``; others are left out."""
    averages = metrics_by_dimension(body, VM_NAME_DIMENSION, "average")
    totals = metrics_by_dimension(body, VM_NAME_DIMENSION, "total")
    out: dict[str, InstanceSignals] = {}
    for name in set(averages) | set(totals):
        instance = instance_for_name(name, instance_ids, scale_set_name)
        if instance is None:
            continue
        cpu = [v for s in averages.get(name, ()) if s.metric.lower() == CPU_METRIC.lower() for _, v in s.points]
        net_in = [v for s in totals.get(name, ()) if s.metric.lower() == NETWORK_IN_METRIC.lower() for _, v in s.points]
        net_out = [
            v for s in totals.get(name, ()) if s.metric.lower() == NETWORK_OUT_METRIC.lower() for _, v in s.points
        ]
        previous = out.get(instance)
        signals = InstanceSignals(
            instance_id=instance,
            start=start,
            end=end,
            cpu_percent=_mean(cpu),
            network_in_bytes=sum(net_in) if net_in else None,
            network_out_bytes=sum(net_out) if net_out else None,
            sources=("metrics",),
        )
        out[instance] = signals if previous is None else merge_signals(previous, signals)
    return out


def probe_signals(
    body: Json, addresses: Mapping[str, str], start: datetime, end: datetime
) -> dict[str, InstanceSignals]:
    """The load balancer's Metrics - List response (``DipAvailability``, ``BackendIPAddress eq '*'``,
    average) -> ``lb_probe_up`` per instance: its backend address's last data point in the window is at
    least ``PROBE_UP_PERCENT``. ``addresses`` maps instance id -> private IP; a backend address no
    instance has is left out, and so is an instance whose address has no data point."""
    by_ip = {ip: instance for instance, ip in addresses.items() if ip}
    out: dict[str, InstanceSignals] = {}
    for ip, series in metrics_by_dimension(body, BACKEND_IP_DIMENSION, "average").items():
        instance = by_ip.get(ip)
        if instance is None:
            continue
        points = sorted(p for s in series if s.metric.lower() == PROBE_METRIC.lower() for p in s.points)
        if not points:
            continue
        out[instance] = InstanceSignals(
            instance_id=instance, start=start, end=end, lb_probe_up=points[-1][1] >= PROBE_UP_PERCENT, sources=("lb",)
        )
    return out


# --------------------------------------------------------------------------------------------------
# Pure mapping: Log Analytics query response -> per-instance values
# --------------------------------------------------------------------------------------------------


class LogsShapeError(PortError):
    """The query's result does not have the columns the mapping needs: the query (a setting) is wrong."""


def _column_index(columns: Sequence[Any], name: str) -> int | None:
    for i, column in enumerate(columns):
        key = column.get("name") if isinstance(column, Mapping) else column
        if str(key or "").lower() == name.lower():
            return i
    return None


def _latencies(value: Any) -> tuple[float, ...]:
    """A ``dynamic`` cell: a JSON array, or its JSON text (how the query API may return dynamic values)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return ()
    if not isinstance(value, list):
        return ()
    numbers = (_number(v) for v in value)
    return tuple(n for n in numbers if n is not None and n >= 0)


def _count(value: Any) -> int | None:
    number = _number(value)
    return None if number is None or number < 0 else int(number)


def logs_signals(
    tables: Sequence[Json],
    instance_ids: Sequence[str],
    scale_set_name: str,
    start: datetime,
    end: datetime,
    instance_column: str = LOGS_INSTANCE_COLUMN,
    computer_names: Mapping[str, str] | None = None,
) -> dict[str, InstanceSignals]:
    """The query response's ``tables`` (each ``{"name", "columns": [{"name","type"}], "rows": [[...]]}``,
    OperationalInsights.json ``queryResults``) -> requests, errors and latencies per instance, read from
    the first table's ``instance_column``, ``requests``, ``errors`` and ``latencies_ms`` columns. Missing
    ``instance_column`` or ``requests`` raises ``LogsShapeError``; ``errors`` and ``latencies_ms`` are
    optional (None / empty when absent). Several rows of one instance add up."""
    if not tables:
        return {}
    table = tables[0]
    columns = table.get("columns") or []
    who = _column_index(columns, instance_column)
    requests_at = _column_index(columns, "requests")
    if who is None or requests_at is None:
        names = [c.get("name") if isinstance(c, Mapping) else c for c in columns]
        raise LogsShapeError(
            f"the signals query must return the columns {instance_column!r} and 'requests' "
            f"(and optionally 'errors', 'latencies_ms'); it returned {names}"
        )
    errors_at = _column_index(columns, "errors")
    latencies_at = _column_index(columns, "latencies_ms")
    out: dict[str, InstanceSignals] = {}
    for row in table.get("rows") or ():
        if not isinstance(row, Sequence) or isinstance(row, str) or len(row) <= max(who, requests_at):
            continue
        instance = instance_for_name(str(row[who] or ""), instance_ids, scale_set_name, computer_names)
        if instance is None:
            continue
        signals = InstanceSignals(
            instance_id=instance,
            start=start,
            end=end,
            requests=_count(row[requests_at]),
            errors=_count(row[errors_at]) if errors_at is not None and errors_at < len(row) else None,
            latencies_ms=_latencies(row[latencies_at]) if latencies_at is not None and latencies_at < len(row) else (),
            sources=("logs",),
        )
        previous = out.get(instance)
        out[instance] = signals if previous is None else _add_counts(previous, signals)
    return out


def _add_counts(a: InstanceSignals, b: InstanceSignals) -> InstanceSignals:
    def plus(x: int | None, y: int | None) -> int | None:
        return None if x is None and y is None else (x or 0) + (y or 0)

    return replace(
        a,
        requests=plus(a.requests, b.requests),
        errors=plus(a.errors, b.errors),
        latencies_ms=a.latencies_ms + b.latencies_ms,
    )


# --------------------------------------------------------------------------------------------------
# Merging
# --------------------------------------------------------------------------------------------------


def merge_signals(a: InstanceSignals, b: InstanceSignals) -> InstanceSignals:
    """One instance's signals from two sources: each figure from the first source that has it."""

    def first(x: Any, y: Any) -> Any:
        return y if x is None else x

    return replace(
        a,
        requests=first(a.requests, b.requests),
        errors=first(a.errors, b.errors),
        latencies_ms=a.latencies_ms or b.latencies_ms,
        cpu_percent=first(a.cpu_percent, b.cpu_percent),
        network_in_bytes=first(a.network_in_bytes, b.network_in_bytes),
        network_out_bytes=first(a.network_out_bytes, b.network_out_bytes),
        lb_probe_up=first(a.lb_probe_up, b.lb_probe_up),
        vm_health=first(a.vm_health, b.vm_health),
        sources=a.sources + tuple(s for s in b.sources if s not in a.sources),
    )


@dataclass
class CompositeSignalSource:
    """Reads every source and merges what each knows per instance.

    A source that fails (any ``PortError``) is left out of this read and named in ``last_failures``;
    only when every source fails does ``read`` raise (``TransientError`` naming each failure). Which
    sources contributed to an instance is in its ``InstanceSignals.sources``."""

    sources: Sequence[tuple[str, SignalSource]]
    last_failures: dict[str, str] = field(default_factory=dict)

    def read(self, instance_ids: Sequence[str], start: datetime, end: datetime) -> dict[str, InstanceSignals]:
        merged: dict[str, InstanceSignals] = {}
        failures: dict[str, str] = {}
        for name, source in self.sources:
            try:
                answer = source.read(instance_ids, start, end)
            except PortError as err:
                failures[name] = f"{type(err).__name__}: {err}"
                continue
            for instance, signals in answer.items():
                merged[instance] = merge_signals(merged[instance], signals) if instance in merged else signals
        self.last_failures = failures
        if failures and len(failures) == len(self.sources):
            raise TransientError("no signal source answered: " + "; ".join(f"{k}: {v}" for k, v in failures.items()))
        return merged


class InstanceViewSource:
    """``SignalSource``: the Application Health extension's ``vmHealth`` of each instance, as the scale
    set's instance view reports it (``InstanceView.vm_health``, read by the compute adapter's one VM list
    with ``$expand=instanceView``: no extra call when ``observe`` returns the tick's observation). An
    instance without the extension has no ``vm_health`` (None), and is left out."""

    def __init__(self, observe: Callable[[], FleetView]) -> None:
        self._observe = observe

    def read(self, instance_ids: Sequence[str], start: datetime, end: datetime) -> dict[str, InstanceSignals]:
        _validate_window(start, end)
        wanted = set(instance_ids)
        return {
            view.instance_id: InstanceSignals(
                view.instance_id, start, end, vm_health=view.vm_health, sources=("instance-view",)
            )
            for view in self._observe().instances
            if view.instance_id in wanted and view.vm_health is not None
        }


# --------------------------------------------------------------------------------------------------
# The SDK adapters
# --------------------------------------------------------------------------------------------------


def _timespan(start: datetime, end: datetime) -> str:
    """Metrics - List's ``timespan``: ``startDateTime_ISO/endDateTime_ISO``, in milliseconds as in the
    specification's example (``2021-04-20T09:00:00.000Z/...``), so a short window is not cut to nothing."""

    def iso(moment: datetime) -> str:
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    return f"{iso(start)}/{iso(end)}"


def _validate_window(start: datetime, end: datetime) -> None:
    if end <= start:
        raise ValueError(f"the window must end after it starts: {start.isoformat()} .. {end.isoformat()}")


def _map_sdk_error(err: Exception, action: str) -> PortError:
    from rollout.adapters.compute import port_error_from  # azure.mgmt.compute: only once a read failed

    mapped = port_error_from(err, action)  # type: ignore[arg-type]
    if isinstance(mapped, PortError):
        return mapped
    return TransientError(f"{action}: {err}")


def _client_options(timeout_s: float, ca_bundle: str | None) -> dict[str, Any]:
    """Bounded retries (one more try, short back-off, never sleeping through a long ``Retry-After``: the
    compute adapter's policy) and timeouts: a signal read must not hold a tick."""
    from rollout.adapters.compute import _BoundedRetryPolicy  # azure.mgmt.compute: at the first read only

    options: dict[str, Any] = {
        "retry_policy": _BoundedRetryPolicy(
            max_retry_after_s=2.0,
            retry_total=1,
            retry_connect=1,
            retry_read=1,
            retry_status=1,
            retry_backoff_factor=0.3,
            retry_backoff_max=2,
            timeout=max(timeout_s * 2, 10.0),
        ),
        "connection_timeout": timeout_s,
        "read_timeout": timeout_s,
    }
    if ca_bundle:
        options["connection_verify"] = ca_bundle
    return options


def _subscription_of(resource_id: str) -> str:
    parts = resource_id.strip("/").split("/")
    if len(parts) < 2 or parts[0].lower() != "subscriptions" or not parts[1]:
        raise ValueError(f"not a resource id (expected /subscriptions/<id>/...): {resource_id!r}")
    return parts[1]


class _ArmMetrics:
    """Metrics - List through azure-mgmt-monitor's ``MonitorManagementClient``, made on first use."""

    def __init__(
        self,
        resource_id: str,
        *,
        credential: TokenCredential,
        arm_endpoint: str,
        ca_bundle: str | None,
        timeout_s: float,
    ) -> None:
        self.resource_id = "/" + resource_id.strip("/")
        self.subscription_id = _subscription_of(self.resource_id)
        self._credential = credential
        self._arm_endpoint = arm_endpoint.rstrip("/")
        self._ca_bundle = ca_bundle
        self._timeout_s = timeout_s
        self._client: LazyClient[Any] = LazyClient(self._make_client)

    def _make_client(self) -> Any:
        from azure.mgmt.monitor import MonitorManagementClient  # lazy: not at app import

        return MonitorManagementClient(
            self._credential,
            self.subscription_id,
            base_url=self._arm_endpoint,
            credential_scopes=[self._arm_endpoint + "/.default"],
            **_client_options(self._timeout_s, self._ca_bundle),
        )

    def _get_client(self) -> Any:
        return self._client.get()

    def list(
        self, metricnames: Sequence[str], dimension: str, aggregation: str, start: datetime, end: datetime
    ) -> Json:
        """The raw Metrics - List response body."""
        from azure.core.exceptions import AzureError

        client = self._get_client()
        action = f"Metrics - List {','.join(metricnames)} of {self.resource_id}"
        try:
            text = client.metrics.list(
                self.resource_id.lstrip("/"),
                timespan=_timespan(start, end),
                interval="PT1M",
                metricnames=",".join(metricnames),
                aggregation=aggregation,
                filter=f"{dimension} eq '*'",
                cls=lambda pipeline_response, _deserialized, _headers: pipeline_response.http_response.text(),
            )
        except AzureError as err:
            raise _map_sdk_error(err, action) from err
        try:
            body = json.loads(text)
        except (TypeError, ValueError) as err:
            raise TransientError(f"{action}: the answer is not JSON: {str(text)[:200]!r}") from err
        if not isinstance(body, Mapping):
            raise TransientError(f"{action}: the answer is not a JSON object")
        return body

    def close(self) -> None:
        self._client.close()


class ScaleSetMetricsSource:
    """``SignalSource``: the scale set's platform metrics per instance (CPU, network)."""

    def __init__(
        self,
        scale_set_id: str,
        *,
        credential: TokenCredential,
        arm_endpoint: str = "https://management.azure.com",
        ca_bundle: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._metrics = _ArmMetrics(
            scale_set_id, credential=credential, arm_endpoint=arm_endpoint, ca_bundle=ca_bundle, timeout_s=timeout_s
        )
        self.scale_set_name = self._metrics.resource_id.rstrip("/").rsplit("/", 1)[-1]

    def read(self, instance_ids: Sequence[str], start: datetime, end: datetime) -> dict[str, InstanceSignals]:
        _validate_window(start, end)
        body = self._metrics.list(SCALE_SET_METRICS, VM_NAME_DIMENSION, "average,total", start, end)
        return scale_set_signals(body, instance_ids, self.scale_set_name, start, end)

    def close(self) -> None:
        self._metrics.close()


class LoadBalancerProbeSource:
    """``SignalSource``: the load balancer's health probe status per backend address.

    ``addresses`` returns instance id -> private IP (the compute adapter's observation has them); it is
    called on every read so scale-out shows up."""

    def __init__(
        self,
        load_balancer_id: str,
        addresses: Callable[[], Mapping[str, str]],
        *,
        credential: TokenCredential,
        arm_endpoint: str = "https://management.azure.com",
        ca_bundle: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._metrics = _ArmMetrics(
            load_balancer_id, credential=credential, arm_endpoint=arm_endpoint, ca_bundle=ca_bundle, timeout_s=timeout_s
        )
        self._addresses = addresses

    def read(self, instance_ids: Sequence[str], start: datetime, end: datetime) -> dict[str, InstanceSignals]:
        _validate_window(start, end)
        wanted = set(instance_ids)
        addresses = {i: ip for i, ip in self._addresses().items() if i in wanted}
        if not addresses:
            return {}
        body = self._metrics.list((PROBE_METRIC,), BACKEND_IP_DIMENSION, "average", start, end)
        return probe_signals(body, addresses, start, end)

    def close(self) -> None:
        self._metrics.close()


class LogAnalyticsSource:
    """``SignalSource``: a KQL query over a Log Analytics workspace (``LogsQueryClient.query_workspace``).

    ``endpoint`` is the Log Analytics endpoint (``https://api.loganalytics.io``; the SDK appends
    ``/v1/workspaces/{id}/query``); ``ca_bundle`` trusts the local emulator's CA."""

    def __init__(
        self,
        workspace_id: str,
        *,
        credential: TokenCredential,
        scale_set_name: str,
        query: str = DEFAULT_LOGS_QUERY,
        endpoint: str = DEFAULT_LOGS_ENDPOINT,
        ca_bundle: str | None = None,
        timeout_s: float = 20.0,
        computer_names: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        if not query.strip():
            raise ValueError("the signals query is empty")
        self._computer_names = computer_names  # computer name -> instance id, looked up at each read
        self.workspace_id = workspace_id
        self.query = query
        self.scale_set_name = scale_set_name
        self._credential = credential
        self._endpoint = endpoint.rstrip("/")
        self._ca_bundle = ca_bundle
        self._timeout_s = timeout_s
        self._client: LazyClient[Any] = LazyClient(self._make_client)

    def _make_client(self) -> Any:
        from azure.monitor.query import LogsQueryClient  # lazy: not at app import

        return LogsQueryClient(
            self._credential, endpoint=self._endpoint, **_client_options(self._timeout_s, self._ca_bundle)
        )

    def _get_client(self) -> Any:
        return self._client.get()

    def read(self, instance_ids: Sequence[str], start: datetime, end: datetime) -> dict[str, InstanceSignals]:
        _validate_window(start, end)
        from azure.core.exceptions import AzureError
        from azure.monitor.query import LogsQueryPartialResult

        client = self._get_client()
        action = f"Log Analytics query of workspace {self.workspace_id}"
        try:
            result = client.query_workspace(
                self.workspace_id, self.query, timespan=(start, end), server_timeout=int(self._timeout_s)
            )
        except AzureError as err:
            raise _map_sdk_error(err, action) from err
        tables = result.partial_data if isinstance(result, LogsQueryPartialResult) else result.tables
        if isinstance(result, LogsQueryPartialResult) and not tables:
            raise TransientError(f"{action}: partial result without data: {result.partial_error}")
        raw = [
            {"name": t.name, "columns": [{"name": c} for c in t.columns], "rows": [list(r) for r in t.rows]}
            for t in tables
        ]
        names = self._computer_names() if self._computer_names is not None else None
        return logs_signals(raw, instance_ids, self.scale_set_name, start, end, computer_names=names)

    def close(self) -> None:
        self._client.close()


# --------------------------------------------------------------------------------------------------
# The factory
# --------------------------------------------------------------------------------------------------


def signal_source_from_settings(
    settings: Any,
    signals: Any,
    *,
    credential: TokenCredential | None = None,
    addresses: Callable[[], Mapping[str, str]] | None = None,
    computer_names: Callable[[], Mapping[str, str]] | None = None,
) -> CompositeSignalSource | None:
    """The sources ``signals`` (``rollout.settings.SignalSettings``, ``load_signal_settings``) turn on for
    the scale set of ``settings`` (``rollout.settings.Settings``), merged; None when none is.

    ``credential``: default ``credential_for(settings.arm_token)`` (the managed identity in Azure).
    ``addresses``: instance id -> private IP, needed by the load balancer source (it is left out
    without it). ``computer_names``: computer name -> instance id, so the logs of a workspace shared with
    other scale sets are matched to this one's instances only."""
    parts: list[tuple[str, SignalSource]] = []
    if not (signals.metrics or signals.load_balancer_id or signals.logs_workspace_id):
        return None
    if credential is None:
        from rollout.adapters.compute import credential_for

        credential = credential_for(settings.arm_token)
    scale_set_id = (
        f"/subscriptions/{settings.subscription_id}/resourceGroups/{settings.resource_group}"
        f"/providers/Microsoft.Compute/virtualMachineScaleSets/{settings.vmss_name}"
    )
    arm = {"credential": credential, "arm_endpoint": settings.arm_endpoint, "ca_bundle": settings.arm_ca_bundle}
    if signals.metrics:
        parts.append(("metrics", ScaleSetMetricsSource(scale_set_id, **arm)))
    if signals.load_balancer_id and addresses is not None:
        parts.append(("lb", LoadBalancerProbeSource(signals.load_balancer_id, addresses, **arm)))
    if signals.logs_workspace_id:
        parts.append(
            (
                "logs",
                LogAnalyticsSource(
                    signals.logs_workspace_id,
                    credential=credential,
                    scale_set_name=settings.vmss_name,
                    query=signals.logs_query,
                    endpoint=signals.logs_endpoint,
                    ca_bundle=settings.arm_ca_bundle,
                    computer_names=computer_names,
                ),
            )
        )
    return CompositeSignalSource(parts) if parts else None


__all__ = [
    "CompositeSignalSource",
    "DEFAULT_LOGS_QUERY",
    "InstanceViewSource",
    "LoadBalancerProbeSource",
    "LogAnalyticsSource",
    "LogsShapeError",
    "ScaleSetMetricsSource",
    "base36",
    "instance_for_name",
    "logs_signals",
    "merge_signals",
    "metrics_by_dimension",
    "probe_signals",
    "scale_set_signals",
    "signal_source_from_settings",
]
