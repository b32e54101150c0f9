"""The signal adapters' pure parts (rollout/adapters/signals.py): official response shapes -> InstanceSignals,
instance names, merging, the SIGNALS_* settings and the factory. No network.

Shapes come from the specification's examples (tests/data/azure-monitor-specs) and, for scale sets and load
balancers, bodies built in the same shape with the dimensions the supported-metrics pages list."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rollout.adapters.signals import (
    CompositeSignalSource,
    InstanceViewSource,
    LoadBalancerProbeSource,
    LogAnalyticsSource,
    LogsShapeError,
    ScaleSetMetricsSource,
    base36,
    instance_for_name,
    logs_signals,
    merge_signals,
    metrics_by_dimension,
    probe_signals,
    scale_set_signals,
    signal_source_from_settings,
)
from rollout.ports import NotFoundError, TransientError
from rollout.settings import (
    DEFAULT_SIGNALS_LOGS_QUERY,
    SettingsError,
    SignalSettings,
    load_settings,
    load_signal_settings,
)
from rollout.signals import InstanceSignals

SPECS = Path(__file__).resolve().parents[1] / "data" / "azure-monitor-specs"
START = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
END = datetime(2026, 1, 1, 10, 5, tzinfo=UTC)
VMSS = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web"


def example(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((SPECS / name).read_text())["responses"]["200"]["body"]
    return body


def metric(name: str, series: list[tuple[str | None, list[dict[str, Any]]]], dim: str = "vmname") -> dict[str, Any]:
    """One ``value`` item of a Metrics - List answer (the shape of GetMetric.json)."""
    return {
        "id": f"{VMSS}/providers/Microsoft.Insights/metrics/{name}",
        "type": "Microsoft.Insights/metrics",
        "name": {"value": name, "localizedValue": name},
        "unit": "Percent",
        "timeseries": [
            {
                "metadatavalues": []
                if key is None
                else [{"name": {"value": dim, "localizedValue": dim}, "value": key}],
                "data": data,
            }
            for key, data in series
        ],
        "errorCode": "Success",
    }


def points(field: str, *values: float | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for minute, value in enumerate(values):
        point: dict[str, Any] = {"timeStamp": f"2026-01-01T10:0{minute}:00Z"}
        if value is not None:
            point[field] = value
        out.append(point)
    return out


# -- the specification's example ----------------------------------------------------------------------


def test_metrics_of_the_spec_example_split_by_a_dimension_named_in_another_case() -> None:
    body = example("GetMetric.json")
    # The request filtered on "Tier"; the answer names the dimension "tier".
    series = metrics_by_dimension(body, "Tier", "average")
    assert set(series) == {"Hot", "Standard", "Cool", "Archive", "Untiered"}
    hot = {s.metric: [v for _, v in s.points] for s in series["Hot"]}
    assert hot == {"BlobCount": [7.0] * 5, "BlobCapacity": [4733.0] * 5}
    assert [t.hour for t, _ in series["Standard"][0].points] == [9, 10, 11, 12, 13]
    # No data point of the example has a total: every series is there, without points.
    totals = metrics_by_dimension(body, "Tier", "total")
    assert set(totals) == set(series) and all(not s.points for v in totals.values() for s in v)


def test_a_metric_that_failed_is_skipped_and_a_series_without_the_dimension_too() -> None:
    body = example("GetMetric.json")
    body["value"][0]["errorCode"] = "InvalidQuery"
    body["value"][1]["timeseries"][0]["metadatavalues"] = []
    series = metrics_by_dimension(body, "tier", "average")
    assert "Standard" not in series  # BlobCount failed, BlobCapacity's Standard series lost its dimension
    assert {s.metric for s in series["Hot"]} == {"BlobCapacity"}


def test_logs_of_the_spec_example_lack_the_signal_columns_and_say_so() -> None:
    tables = example("oms-post-example.json")["tables"]
    with pytest.raises(LogsShapeError, match="'requests'"):
        logs_signals(tables, ["0"], "web", START, END)


# -- instance names -------------------------------------------------------------------------------------


def test_base36_is_the_documented_computer_name_suffix() -> None:
    # "an instance with computer-name-prefix nsgvmss and instance ID 85 will have computer name nsgvmss00002D"
    assert base36(85) == "00002D"
    assert base36(0) == "000000"
    assert base36(36**6 - 1) == "ZZZZZZ"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("web_3", "3"),  # Uniform VM name
        ("WEB_3", "3"),  # Azure Monitor may change the case
        ("web00000B", "11"),  # Uniform computer name, base 36
        ("web00000b", "11"),
        (
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web/virtualMachines/3",
            "3",
        ),
        ("web_1a2b3c4d", "web_1a2b3c4d"),  # Flexible: the VM name is the instance id
        ("web_7", None),  # not asked for
        ("other_3", None),
        ("", None),
    ],
)
def test_instance_for_name_accepts_each_documented_form(name: str, expected: str | None) -> None:
    assert instance_for_name(name, ["3", "11", "web_1a2b3c4d"], "web") == expected


# -- scale set metrics ----------------------------------------------------------------------------------


def test_scale_set_signals_average_cpu_and_sum_network_per_instance() -> None:
    body = {
        "value": [
            metric(
                "Percentage CPU", [("web_0", points("average", 10.0, None, 30.0)), ("web_1", points("average", 90.0))]
            ),
            metric("Network In Total", [("web_0", points("total", 100.0, 50.0)), ("web_9", points("total", 7.0))]),
            metric("Network Out Total", [("web_0", points("total", 1000.0, None))]),
        ]
    }
    got = scale_set_signals(body, ["0", "1"], "web", START, END)
    assert set(got) == {"0", "1"}  # web_9 is not one of the instances asked about
    assert got["0"].cpu_percent == pytest.approx(20.0)  # the null point is not a zero
    assert got["0"].network_in_bytes == 150.0
    assert got["0"].network_out_bytes == 1000.0
    assert got["1"].cpu_percent == 90.0
    assert got["1"].network_in_bytes is None and got["1"].network_out_bytes is None
    assert got["0"].sources == ("metrics",) and got["0"].start == START and got["0"].end == END


def test_scale_set_signals_read_computer_names_as_well() -> None:
    body = {
        "value": [
            metric("Percentage CPU", [("web000000", points("average", 5.0)), ("web00000A", points("average", 6.0))])
        ]
    }
    got = scale_set_signals(body, ["0", "10"], "web", START, END)
    assert {k: v.cpu_percent for k, v in got.items()} == {"0": 5.0, "10": 6.0}


def test_an_instance_with_no_data_point_is_absent_not_zero() -> None:
    body = {"value": [metric("Percentage CPU", [("web_0", points("average", None, None))])]}
    got = scale_set_signals(body, ["0"], "web", START, END)
    assert got["0"].cpu_percent is None


# -- load balancer probe status -------------------------------------------------------------------------


def test_probe_signals_take_the_last_minute_of_each_backend() -> None:
    body = {
        "value": [
            metric(
                "DipAvailability",
                [
                    ("10.0.0.4", points("average", 100.0, 100.0, 0.0)),  # went down in the last minute
                    ("10.0.0.5", points("average", 0.0, 100.0)),  # recovered
                    ("10.0.0.6", points("average", 100.0, None)),  # last minute without data: the one before
                    ("10.0.0.99", points("average", 100.0)),  # no instance has it
                ],
                dim="backendipaddress",
            )
        ]
    }
    addresses = {"0": "10.0.0.4", "1": "10.0.0.5", "2": "10.0.0.6", "3": "10.0.0.7"}
    got = probe_signals(body, addresses, START, END)
    assert {k: v.lb_probe_up for k, v in got.items()} == {"0": False, "1": True, "2": True}
    assert got["0"].sources == ("lb",)


# -- Log Analytics ---------------------------------------------------------------------------------------


def nginx_table(rows: list[list[Any]]) -> dict[str, Any]:
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


def test_logs_signals_read_dynamic_cells_as_json_text_or_as_values() -> None:
    table = nginx_table(
        [
            ["web000000", 3, 1, "[1.5, 2.5, 100]"],  # dynamic as JSON text
            ["web000001", 2, 0, [4, 5]],  # dynamic as a JSON value
            ["elsewhere01", 9, 9, "[]"],  # not an instance of this scale set
        ]
    )
    got = logs_signals([table], ["0", "1"], "web", START, END)
    assert got["0"] == InstanceSignals(
        "0", START, END, requests=3, errors=1, latencies_ms=(1.5, 2.5, 100.0), sources=("logs",)
    )
    assert got["1"].latencies_ms == (4.0, 5.0) and got["1"].errors == 0
    assert set(got) == {"0", "1"}


def test_logs_rows_of_one_instance_add_up_and_optional_columns_may_be_missing() -> None:
    table = {
        "name": "PrimaryResult",
        "columns": [{"name": "computer", "type": "string"}, {"name": "Requests", "type": "long"}],
        "rows": [["web_0", 3], ["web000000", 4], ["web_0", None]],
    }
    got = logs_signals([table], ["0"], "web", START, END)
    assert got["0"].requests == 7
    assert got["0"].errors is None and got["0"].latencies_ms == ()


def test_logs_garbage_cells_are_not_figures() -> None:
    table = nginx_table([["web_0", "many", -1, "not json"], ["web_1", 2, 1, '["x", 3, -4]']])
    got = logs_signals([table], ["0", "1"], "web", START, END)
    assert got["0"].requests is None and got["0"].errors is None and got["0"].latencies_ms == ()
    assert got["1"].latencies_ms == (3.0,)


def test_no_table_is_no_signal() -> None:
    assert logs_signals([], ["0"], "web", START, END) == {}


# -- merging -----------------------------------------------------------------------------------------------


class FakeSource:
    def __init__(self, answer: dict[str, InstanceSignals] | Exception) -> None:
        self.answer = answer
        self.calls: list[tuple[tuple[str, ...], datetime, datetime]] = []

    def read(self, instance_ids: Sequence[str], start: datetime, end: datetime) -> dict[str, InstanceSignals]:
        self.calls.append((tuple(instance_ids), start, end))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_merge_takes_each_figure_from_the_first_source_that_has_it() -> None:
    a = InstanceSignals("0", START, END, requests=10, errors=2, sources=("logs",))
    b = InstanceSignals("0", START, END, requests=99, cpu_percent=40.0, lb_probe_up=False, sources=("metrics", "lb"))
    merged = merge_signals(a, b)
    assert (merged.requests, merged.errors, merged.cpu_percent, merged.lb_probe_up) == (10, 2, 40.0, False)
    assert merged.sources == ("logs", "metrics", "lb")


def test_composite_merges_sources_and_keeps_going_when_one_fails() -> None:
    logs = FakeSource({"0": InstanceSignals("0", START, END, requests=5, errors=0, sources=("logs",))})
    broken = FakeSource(TransientError("Metrics - List answered 503"))
    lb = FakeSource(
        {
            "0": InstanceSignals("0", START, END, lb_probe_up=True, sources=("lb",)),
            "1": InstanceSignals("1", START, END, lb_probe_up=False, sources=("lb",)),
        }
    )
    composite = CompositeSignalSource([("logs", logs), ("metrics", broken), ("lb", lb)])
    got = composite.read(["0", "1"], START, END)
    assert got["0"].requests == 5 and got["0"].lb_probe_up is True and got["0"].sources == ("logs", "lb")
    assert got["1"].lb_probe_up is False and got["1"].requests is None
    assert set(composite.last_failures) == {"metrics"} and "503" in composite.last_failures["metrics"]
    assert logs.calls == [(("0", "1"), START, END)]


def test_composite_raises_only_when_every_source_failed() -> None:
    composite = CompositeSignalSource(
        [("metrics", FakeSource(TransientError("down"))), ("logs", FakeSource(NotFoundError("no workspace")))]
    )
    with pytest.raises(TransientError, match="metrics: TransientError: down; logs: NotFoundError: no workspace"):
        composite.read(["0"], START, END)


def test_a_source_refuses_a_window_that_ends_before_it_starts() -> None:
    source = ScaleSetMetricsSource(VMSS, credential=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must end after it starts"):
        source.read(["0"], END, START)


def test_instance_view_source_reports_vm_health_where_the_extension_reports_it() -> None:
    from rollout.model import FleetView, InstanceView, ModelSpec

    fleet = FleetView(
        model=ModelSpec(extension=None),
        provisioning_state="Succeeded",
        instances=(
            InstanceView("0", True, "Succeeded", vm_health="Healthy"),
            InstanceView("1", True, "Succeeded", vm_health="Unhealthy"),
            InstanceView("2", True, "Succeeded"),  # no Application Health extension
            InstanceView("3", True, "Succeeded", vm_health="Healthy"),  # not asked about
        ),
    )
    got = InstanceViewSource(lambda: fleet).read(["0", "1", "2"], START, END)
    assert {k: v.vm_health for k, v in got.items()} == {"0": "Healthy", "1": "Unhealthy"}
    assert got["1"].sources == ("instance-view",)


# -- settings and factory ------------------------------------------------------------------------------------

BASE_ENV = {
    "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000001",
    "VMSS_RESOURCE_GROUP": "rg",
    "VMSS_NAME": "web",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "ARM_TOKEN": "t",
}
LB_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Network/loadBalancers/lb"
)
WORKSPACE = "63613592-b6f7-4c3d-a390-22ba13102111"


def test_signal_settings_default_to_nothing_and_the_factory_then_gives_none() -> None:
    assert load_signal_settings({}) == SignalSettings()
    assert signal_source_from_settings(load_settings(BASE_ENV), load_signal_settings(BASE_ENV)) is None


def test_signal_settings_build_each_source_they_name() -> None:
    env = {
        **BASE_ENV,
        "SIGNALS_METRICS": "TRUE",
        "SIGNALS_LOAD_BALANCER_ID": LB_ID,
        "SIGNALS_LOGS_WORKSPACE_ID": WORKSPACE,
        "SIGNALS_LOGS_ENDPOINT": "https://127.0.0.1:8443/",
    }
    signals = load_signal_settings(env)
    assert signals == SignalSettings(True, LB_ID, WORKSPACE, DEFAULT_SIGNALS_LOGS_QUERY, "https://127.0.0.1:8443")
    composite = signal_source_from_settings(load_settings(env), signals, addresses=lambda: {})
    assert composite is not None
    kinds = {name: type(source) for name, source in composite.sources}
    assert kinds == {"metrics": ScaleSetMetricsSource, "lb": LoadBalancerProbeSource, "logs": LogAnalyticsSource}
    metrics = dict(composite.sources)["metrics"]
    assert isinstance(metrics, ScaleSetMetricsSource) and metrics.scale_set_name == "web"
    # Without the instances' addresses the probe status cannot be mapped: that source is left out.
    without = signal_source_from_settings(load_settings(env), signals)
    assert without is not None and [n for n, _ in without.sources] == ["metrics", "logs"]


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"SIGNALS_METRICS": "yes"}, "SIGNALS_METRICS='yes' must be true or false"),
        ({"SIGNALS_LOAD_BALANCER_ID": "lb"}, "SIGNALS_LOAD_BALANCER_ID='lb' is not a load balancer resource id"),
        ({"SIGNALS_LOAD_BALANCER_ID": VMSS}, "is not a load balancer resource id"),
        ({"SIGNALS_LOGS_WORKSPACE_ID": "ws; drop"}, "SIGNALS_LOGS_WORKSPACE_ID='ws; drop' is not a workspace id"),
        ({"SIGNALS_LOGS_ENDPOINT": "http://api.loganalytics.io"}, "must be an https:// URL"),
    ],
)
def test_bad_signal_settings_are_named(env: dict[str, str], problem: str) -> None:
    with pytest.raises(SettingsError, match=problem.replace("(", r"\(").replace("?", r"\?")):
        load_signal_settings(env)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as err:
        load_signal_settings({"SIGNALS_METRICS": "1", "SIGNALS_LOGS_WORKSPACE_ID": "x"})
    assert "SIGNALS_METRICS" in str(err.value) and "SIGNALS_LOGS_WORKSPACE_ID" in str(err.value)


def test_the_azure_monitor_packages_are_imported_only_when_a_source_reads() -> None:
    """Cold start (issue 13): building the sources from settings imports neither SDK."""
    code = (
        "import sys\n"
        "from rollout.adapters.signals import signal_source_from_settings\n"
        "from rollout.settings import load_settings, load_signal_settings\n"
        f"env = {dict(BASE_ENV, SIGNALS_METRICS='true', SIGNALS_LOGS_WORKSPACE_ID=WORKSPACE)!r}\n"
        "source = signal_source_from_settings(load_settings(env), load_signal_settings(env))\n"
        "assert source is not None\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('azure.monitor', 'azure.mgmt.monitor')))\n"
        "print(loaded)\n"
    )
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True, cwd=repo)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_a_shared_workspace_counts_only_this_scale_sets_computers() -> None:
    from rollout.adapters.signals import instance_for_name

    ids = ["0", "1"]
    names = {"web000000": "0", "web000001": "1"}
    # With the observation's computer names, another scale set's computer (same base-36 tail) is not ours.
    assert instance_for_name("web000001", ids, "web", names) == "1"
    assert instance_for_name("WEB000000", ids, "web", names) == "0"
    assert instance_for_name("api000001", ids, "web", names) is None
    assert instance_for_name("othervm000001", ids, "web", names) is None
    # A resource id names its scale set: another one's instance 1 is not ours.
    ours = (
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web/virtualMachines/1"
    )
    assert instance_for_name(ours, ids, "web", names) == "1"
    assert instance_for_name(ours.replace("/web/", "/api/"), ids, "web", names) is None
    # The scale set's own metrics (every VMName is one of its instances): the base-36 form still reads.
    assert instance_for_name("web000001", ids, "web") == "1"
