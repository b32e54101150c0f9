"""The signal adapters (rollout/adapters/signals.py) through the real clients (azure-mgmt-monitor's
MonitorManagementClient, azure-monitor-query's LogsQueryClient) over HTTPS against the emulator's Azure
Monitor endpoints (emulator/arm/monitor.py), fed by what synthetic instances really served.

Each test sends its own requests to the instances and reads them back for a window that holds only them."""

from __future__ import annotations

import http.client
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from emulator.arm import ArmEmulator
from emulator.lb import RoundRobinBalancer
from rollout.adapters.compute import StaticTokenCredential
from rollout.adapters.signals import (
    LoadBalancerProbeSource,
    LogAnalyticsSource,
    ScaleSetMetricsSource,
    signal_source_from_settings,
)
from rollout.ports import NotFoundError, PortError
from rollout.settings import DEFAULT_SIGNALS_LOGS_QUERY, load_settings, load_signal_settings
from tests.fixtures.emulator import EMULATOR_TOKEN, SUBSCRIPTION_ID, ScaleSetHandle

pytestmark = pytest.mark.integration

WORKSPACE = "6361359f-b6f7-4c3d-a390-22ba13102111"


@pytest.fixture
def monitor(arm_emulator: ArmEmulator) -> Iterator[ArmEmulator]:
    """The emulator with a workspace; the undocumented-behaviour switches restored afterwards."""
    arm_emulator.monitor.add_workspace(WORKSPACE)
    try:
        yield arm_emulator
    finally:
        arm_emulator.monitor.choose(vm_name_dimension="vm-name", logs_dynamic="string")


def hit(address: str, port: int, times: int) -> None:
    for _ in range(times):
        conn = http.client.HTTPConnection(address, port, timeout=5)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()
        finally:
            conn.close()


def window_with(traffic: Callable[[], None]) -> tuple[datetime, datetime]:
    start = datetime.now(UTC)
    traffic()
    time.sleep(0.05)
    return start, datetime.now(UTC)


def metrics_source(emu: ArmEmulator, handle: ScaleSetHandle) -> ScaleSetMetricsSource:
    return ScaleSetMetricsSource(
        handle.id, credential=StaticTokenCredential(EMULATOR_TOKEN), arm_endpoint=emu.url, ca_bundle=emu.ca_bundle
    )


@pytest.mark.parametrize("vm_name_dimension", ["vm-name", "computer-name"])
def test_metrics_give_each_instance_its_own_cpu_and_network(
    monitor: ArmEmulator, make_scale_set: Callable[..., ScaleSetHandle], vm_name_dimension: str
) -> None:
    monitor.monitor.choose(vm_name_dimension=vm_name_dimension)
    handle = make_scale_set(3)
    ids = sorted(handle.addresses(), key=int)
    addresses = handle.addresses()

    def traffic() -> None:
        monitor.monitor.sample_cpu()
        hit(addresses[ids[0]], handle.port, 12)
        hit(addresses[ids[1]], handle.port, 3)
        monitor.monitor.sample_cpu()

    start, end = window_with(traffic)
    monitor.clear_requests()
    got = metrics_source(monitor, handle).read(ids, start, end)

    assert set(got) == set(ids)
    first, second, idle = got[ids[0]], got[ids[1]], got[ids[2]]
    # The idle instance used no CPU and moved no bytes: CPU 0 %, and no network data point (not a zero).
    assert idle.cpu_percent == 0.0 and idle.network_in_bytes is None and idle.network_out_bytes is None
    assert first.network_in_bytes is not None and second.network_in_bytes is not None
    # The same request 12 times against 3 times (only the address in the Host header and the page differs).
    assert first.network_in_bytes / 12 == pytest.approx(second.network_in_bytes / 3, rel=0.05)
    assert first.network_out_bytes is not None and second.network_out_bytes is not None
    assert first.network_out_bytes / 12 == pytest.approx(second.network_out_bytes / 3, rel=0.05)
    assert first.cpu_percent is not None and 0.0 <= first.cpu_percent <= 100.0
    assert first.sources == ("metrics",)
    # One Metrics - List call, in the documented form.
    (call,) = monitor.requests("GET", "/providers/Microsoft.Insights/metrics")
    assert call.path.lower() == f"{handle.id}/providers/Microsoft.Insights/metrics".lower()
    assert call.query["api-version"] == "2024-02-01"
    assert call.query["$filter"] == "VMName eq '*'"
    assert call.query["metricnames"] == "Percentage CPU,Network In Total,Network Out Total"
    assert call.query["interval"] == "PT1M" and call.query["aggregation"] == "average,total"


@pytest.mark.parametrize("logs_dynamic", ["string", "json"])
def test_logs_count_each_instances_requests_and_server_errors(
    monitor: ArmEmulator, make_scale_set: Callable[..., ScaleSetHandle], logs_dynamic: str
) -> None:
    monitor.monitor.choose(logs_dynamic=logs_dynamic)
    handle = make_scale_set(3)
    ids = sorted(handle.addresses(), key=int)
    addresses = handle.addresses()
    monitor.instance(handle.resource_group, handle.name, ids[1]).runtime.set_healthy(False)  # answers 500

    def traffic() -> None:
        hit(addresses[ids[0]], handle.port, 5)
        hit(addresses[ids[1]], handle.port, 4)

    start, end = window_with(traffic)
    source = LogAnalyticsSource(
        WORKSPACE,
        credential=StaticTokenCredential(EMULATOR_TOKEN),
        scale_set_name=handle.name,
        endpoint=monitor.url,
        ca_bundle=monitor.ca_bundle,
    )
    got = source.read(ids, start, end)
    assert {i: (s.requests, s.errors) for i, s in got.items()} == {ids[0]: (5, 0), ids[1]: (4, 4)}
    assert len(got[ids[0]].latencies_ms) == 5 and all(ms >= 0 for ms in got[ids[0]].latencies_ms)
    assert got[ids[1]].sources == ("logs",)
    # A window before the traffic holds none of it.
    assert source.read(ids, start - timedelta(minutes=5), start - timedelta(seconds=1)) == {}


def test_probe_status_follows_the_balancers_probes(
    monitor: ArmEmulator, make_scale_set: Callable[..., ScaleSetHandle]
) -> None:
    handle = make_scale_set(3)
    ids = sorted(handle.addresses(), key=int)
    addresses = handle.addresses()
    monitor.instance(handle.resource_group, handle.name, ids[2]).runtime.set_healthy(False)
    lb_id = (
        f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{handle.resource_group}"
        f"/providers/Microsoft.Network/loadBalancers/lb-{uuid.uuid4().hex[:6]}"
    )
    balancer = RoundRobinBalancer(
        "127.0.9.41", 0, backends=[f"{a}:{handle.port}" for a in addresses.values()], probe_interval_s=0.05
    ).start()
    try:
        monitor.monitor.add_load_balancer(lb_id, balancer)
        start = datetime.now(UTC)
        assert balancer.wait_until(lambda s: len(s.up) == 2 and all(b.probes >= 3 for b in s.backends.values()))
        end = datetime.now(UTC)
    finally:
        balancer.stop()
    source = LoadBalancerProbeSource(
        lb_id,
        lambda: dict(addresses),
        credential=StaticTokenCredential(EMULATOR_TOKEN),
        arm_endpoint=monitor.url,
        ca_bundle=monitor.ca_bundle,
    )
    got = source.read(ids, start, end)
    assert {i: s.lb_probe_up for i, s in got.items()} == {ids[0]: True, ids[1]: True, ids[2]: False}
    # Asked about one instance only: only its address is mapped.
    assert set(source.read([ids[2]], start, end)) == {ids[2]}


def test_the_factory_reads_all_three_from_settings(
    monitor: ArmEmulator, make_scale_set: Callable[..., ScaleSetHandle]
) -> None:
    handle = make_scale_set(2)
    ids = sorted(handle.addresses(), key=int)
    addresses = handle.addresses()
    lb_id = (
        f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{handle.resource_group}"
        "/providers/Microsoft.Network/loadBalancers/web-lb"
    )
    env = {
        "AZURE_SUBSCRIPTION_ID": SUBSCRIPTION_ID,
        "VMSS_RESOURCE_GROUP": handle.resource_group,
        "VMSS_NAME": handle.name,
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "ARM_ENDPOINT": monitor.url,
        "ARM_CA_BUNDLE": monitor.ca_bundle,
        "ARM_TOKEN": EMULATOR_TOKEN,
        "SIGNALS_METRICS": "true",
        "SIGNALS_LOAD_BALANCER_ID": lb_id,
        "SIGNALS_LOGS_WORKSPACE_ID": WORKSPACE,
        "SIGNALS_LOGS_ENDPOINT": monitor.url,
    }
    balancer = RoundRobinBalancer(
        "127.0.9.42", 0, backends=[f"{a}:{handle.port}" for a in addresses.values()], probe_interval_s=0.05
    ).start()
    try:
        monitor.monitor.add_load_balancer(lb_id, balancer)
        start = datetime.now(UTC)
        hit(addresses[ids[0]], handle.port, 3)
        assert balancer.wait_until(lambda s: len(s.up) == 2)
        time.sleep(0.3)  # several probe rounds (every 0.05 s) inside the window: backends start out up
        end = datetime.now(UTC)
    finally:
        balancer.stop()
    source = signal_source_from_settings(load_settings(env), load_signal_settings(env), addresses=lambda: addresses)
    assert source is not None
    got = source.read(ids, start, end)
    assert source.last_failures == {}
    first = got[ids[0]]
    # The probes are requests too: the logs count them with the test's three.
    assert first.requests is not None and first.requests >= 3 and first.errors == 0
    assert first.network_in_bytes is not None and first.lb_probe_up is True
    assert set(first.sources) == {"metrics", "lb", "logs"}


def test_what_the_service_refuses_becomes_a_port_error(
    monitor: ArmEmulator, make_scale_set: Callable[..., ScaleSetHandle]
) -> None:
    handle = make_scale_set(1)
    start, end = datetime.now(UTC) - timedelta(minutes=1), datetime.now(UTC)
    gone = ScaleSetMetricsSource(
        handle.id + "-gone",
        credential=StaticTokenCredential(EMULATOR_TOKEN),
        arm_endpoint=monitor.url,
        ca_bundle=monitor.ca_bundle,
    )
    with pytest.raises(NotFoundError):
        gone.read(["0"], start, end)
    other = LogAnalyticsSource(
        str(uuid.uuid4()),
        credential=StaticTokenCredential(EMULATOR_TOKEN),
        scale_set_name=handle.name,
        endpoint=monitor.url,
        ca_bundle=monitor.ca_bundle,
    )
    with pytest.raises(NotFoundError):
        other.read(["0"], start, end)
    custom = LogAnalyticsSource(
        WORKSPACE,
        credential=StaticTokenCredential(EMULATOR_TOKEN),
        scale_set_name=handle.name,
        query="Heartbeat | take 1",
        endpoint=monitor.url,
        ca_bundle=monitor.ca_bundle,
    )
    with pytest.raises(PortError, match="BadArgumentError|400"):
        custom.read(["0"], start, end)


# -- the endpoints' shapes and refusals, with plain HTTP ------------------------------------------------------


def _get(emu: ArmEmulator, path: str, **query: str) -> requests.Response:
    return requests.get(
        emu.url + path,
        params=query,
        headers={"Authorization": f"Bearer {EMULATOR_TOKEN}"},
        verify=emu.ca_bundle,
        timeout=10,
    )


def test_metrics_answer_in_the_documented_shape(
    monitor: ArmEmulator, make_scale_set: Callable[..., ScaleSetHandle]
) -> None:
    handle = make_scale_set(2)
    addresses = handle.addresses()
    start = datetime.now(UTC)
    for address in addresses.values():
        hit(address, handle.port, 2)
    end = datetime.now(UTC) + timedelta(seconds=1)
    timespan = f"{start.strftime('%Y-%m-%dT%H:%M:%SZ')}/{end.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    path = f"{handle.id}/providers/Microsoft.Insights/metrics"
    split = _get(
        monitor, path, **{"api-version": "2024-02-01", "metricnames": "Network In Total", "aggregation": "total,count",
                          "timespan": timespan, "interval": "PT1M", "$filter": "VMName eq '*'"}
    )  # fmt: skip
    assert split.status_code == 200, split.text
    body: dict[str, Any] = split.json()
    assert set(body) == {"cost", "timespan", "interval", "value", "namespace", "resourceregion"}
    (metric,) = body["value"]
    assert metric["name"] == {"value": "Network In Total", "localizedValue": "Network In Total"}
    assert metric["type"] == "Microsoft.Insights/metrics" and metric["unit"] == "Bytes"
    assert metric["errorCode"] == "Success"
    names = sorted(ts["metadatavalues"][0]["value"] for ts in metric["timeseries"])
    assert names == sorted(f"{handle.name}_{i}" for i in addresses)
    assert all(ts["metadatavalues"][0]["name"]["value"] == "vmname" for ts in metric["timeseries"])
    counts = [p.get("count", 0) for ts in metric["timeseries"] for p in ts["data"]]
    assert sum(counts) == 4.0
    # Without $filter: one series for the whole scale set, without metadatavalues.
    whole_query = {"metricnames": "Network In Total", "aggregation": "count", "timespan": timespan}
    whole = _get(monitor, path, **{"api-version": "2024-02-01", **whole_query})
    (series,) = whole.json()["value"][0]["timeseries"]
    assert series["metadatavalues"] == [] and sum(p.get("count", 0) for p in series["data"]) == 4.0


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ({"metricnames": "Percentage CPU"}, 400, "MissingApiVersionParameter"),
        ({"api-version": "2024-02-01", "metricnames": "Disk Read Bytes"}, 400, "BadRequest"),
        ({"api-version": "2024-02-01", "metricnames": "Percentage CPU", "$filter": "LUN eq '0'"}, 400, "BadRequest"),
        ({"api-version": "2024-02-01", "metricnames": "Percentage CPU", "$filter": "VMName ne 'x'"}, 400, "BadRequest"),
        ({"api-version": "2024-02-01", "metricnames": "Percentage CPU", "timespan": "yesterday"}, 400, "BadRequest"),
        ({"api-version": "2024-02-01", "metricnames": "Percentage CPU", "interval": "PT0M"}, 400, "BadRequest"),
        ({"api-version": "2024-02-01", "metricnames": "Percentage CPU", "aggregation": "median"}, 400, "BadRequest"),
        (
            {"api-version": "2024-02-01", "metricnames": "Percentage CPU", "interval": "PT1S",
             "timespan": "2026-01-01T00:00:00Z/2026-01-02T00:00:00Z"},
            400, "BadRequest",
        ),
    ],
)  # fmt: skip
def test_metrics_refuse_bad_queries_with_400(
    monitor: ArmEmulator, make_scale_set: Callable[..., ScaleSetHandle], query: dict[str, str], status: int, code: str
) -> None:
    handle = make_scale_set(1)
    answer = _get(monitor, f"{handle.id}/providers/Microsoft.Insights/metrics", **query)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code


def test_metrics_of_an_unknown_resource_are_404(monitor: ArmEmulator) -> None:
    lb = f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/rg/providers/Microsoft.Network/loadBalancers/nobody"
    answer = _get(monitor, f"{lb}/providers/Microsoft.Insights/metrics", **{"api-version": "2024-02-01"})
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "ResourceNotFound"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"timespan": "PT1H"}, "BadArgumentError"),
        ({"query": DEFAULT_SIGNALS_LOGS_QUERY, "timespan": "not a time"}, "BadArgumentError"),
        ({"query": "search *", "timespan": "PT1H"}, "BadArgumentError"),
    ],
)
def test_the_query_endpoint_refuses_what_it_cannot_answer(
    monitor: ArmEmulator, body: dict[str, str], code: str
) -> None:
    answer = requests.post(
        f"{monitor.url}/v1/workspaces/{WORKSPACE}/query",
        json=body,
        headers={"Authorization": f"Bearer {EMULATOR_TOKEN}"},
        verify=monitor.ca_bundle,
        timeout=10,
    )
    assert answer.status_code == 400 and answer.json()["error"]["code"] == code


def test_the_default_query_answers_in_the_documented_shape(monitor: ArmEmulator) -> None:
    answer = requests.post(
        f"{monitor.url}/v1/workspaces/{WORKSPACE}/query",
        json={"query": "  " + DEFAULT_SIGNALS_LOGS_QUERY.replace(" | ", "\n| "), "timespan": "PT1M"},
        headers={"Authorization": f"Bearer {EMULATOR_TOKEN}"},
        verify=monitor.ca_bundle,
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    (table,) = answer.json()["tables"]
    assert table["name"] == "PrimaryResult"
    assert [(c["name"], c["type"]) for c in table["columns"]] == [
        ("Computer", "string"),
        ("requests", "long"),
        ("errors", "long"),
        ("latencies_ms", "dynamic"),
    ]
    assert isinstance(table["rows"], list)


def test_flexible_vms_are_named_by_their_vm_name(
    monitor: ArmEmulator, make_scale_set: Callable[..., ScaleSetHandle]
) -> None:
    handle = make_scale_set(2, orchestration_mode="Flexible")
    addresses = handle.addresses()
    names = sorted(addresses)
    assert all(name.startswith(f"{handle.name}_") for name in names)  # Flexible instance ids are VM names
    start, end = window_with(lambda: hit(addresses[names[0]], handle.port, 2))
    got = metrics_source(monitor, handle).read(names, start, end)
    assert got[names[0]].network_in_bytes is not None
    assert names[1] not in got or got[names[1]].network_in_bytes is None


def test_the_admin_api_sets_the_switches_and_adds_a_workspace(monitor: ArmEmulator) -> None:
    def admin(method: str, body: Any = None) -> requests.Response:
        return requests.request(
            method,
            f"{monitor.url}/_admin/monitor",
            json=body,
            headers={"Authorization": f"Bearer {EMULATOR_TOKEN}"},
            verify=monitor.ca_bundle,
            timeout=10,
        )

    other = str(uuid.uuid4())
    answer = admin("POST", {"vm_name_dimension": "computer-name", "logs_dynamic": "json", "workspace": other})
    assert answer.status_code == 200, answer.text
    assert answer.json()["vm_name_dimension"] == "computer-name" and other in answer.json()["workspaces"]
    refused = admin("POST", {"vm_name_dimension": "guess", "logs_dynamic": "string"})
    assert refused.status_code == 400
    assert admin("GET").json()["logs_dynamic"] == "json", "a refused change changes nothing"
    assert admin("POST", {"colour": "blue"}).status_code == 400


def test_cpu_samples_of_deleted_instances_are_dropped(
    monitor: ArmEmulator, make_scale_set: Callable[..., ScaleSetHandle]
) -> None:
    handle = make_scale_set(1)
    (instance,) = handle.state.instances.values()
    monitor.monitor.sample_cpu()
    assert instance.vm_id in monitor.monitor._cpu
    monitor.delete_scale_set(handle.resource_group, handle.name)
    monitor.monitor.sample_cpu()
    assert instance.vm_id not in monitor.monitor._cpu


def test_a_throttled_or_failing_service_is_a_transient_error_and_the_composite_keeps_the_rest(
    monitor: ArmEmulator, make_scale_set: Callable[..., ScaleSetHandle]
) -> None:
    from rollout.adapters.signals import CompositeSignalSource
    from rollout.ports import TransientError

    handle = make_scale_set(1)
    (instance_id, address) = next(iter(handle.addresses().items()))
    start, end = window_with(lambda: hit(address, handle.port, 2))
    metrics = metrics_source(monitor, handle)
    logs = LogAnalyticsSource(
        WORKSPACE,
        credential=StaticTokenCredential(EMULATOR_TOKEN),
        scale_set_name=handle.name,
        endpoint=monitor.url,
        ca_bundle=monitor.ca_bundle,
    )
    # Throttled with a Retry-After longer than the adapter sleeps through: no retry, a TransientError at once.
    monitor.inject_fault(
        "GET", r".*/providers/Microsoft\.Insights/metrics", 429, count=1, headers={"Retry-After": "60"}
    )
    began = time.monotonic()
    with pytest.raises(TransientError, match="429"):
        metrics.read([instance_id], start, end)
    assert time.monotonic() - began < 5
    # Failing beyond the client's one retry.
    monitor.inject_fault("GET", r".*/providers/Microsoft\.Insights/metrics", 503, count=2)
    composite = CompositeSignalSource([("metrics", metrics), ("logs", logs)])
    got = composite.read([instance_id], start, end)
    assert got[instance_id].requests == 2 and got[instance_id].sources == ("logs",)
    assert "503" in composite.last_failures["metrics"]
