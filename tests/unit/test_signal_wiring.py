"""The composition root gives each target's service the signal sources ``SIGNALS_*`` turn on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rollout.adapters.signals import CompositeSignalSource
from rollout.bootstrap import build_signals
from rollout.model import FleetView, InstanceView, ModelSpec
from rollout.settings import load_settings
from rollout.targets import TargetRef

SAMPLE = json.loads((Path(__file__).parents[2] / "local.settings.sample.json").read_text())["Values"]


class Observed:
    """A compute port that only observes (the balancer source maps addresses with it)."""

    def __init__(self) -> None:
        self.calls = 0

    def observe(self) -> FleetView:
        self.calls += 1
        views = (
            InstanceView("0", True, "Succeeded", private_ip="10.0.0.4", computer_name="web000000"),
            InstanceView("1", True, "Succeeded"),
        )
        return FleetView(model=ModelSpec(), provisioning_state="Succeeded", instances=views)


def names(source: object) -> list[str]:
    assert isinstance(source, CompositeSignalSource)
    return [name for name, _ in source.sources]


LB = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/loadBalancers/lb"


def test_no_signal_setting_no_source(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("SIGNALS_METRICS", "SIGNALS_LOAD_BALANCER_ID", "SIGNALS_LOGS_WORKSPACE_ID"):
        monkeypatch.delenv(key, raising=False)
    settings = load_settings(SAMPLE)
    ref = TargetRef(settings.subscription_id, settings.resource_group, settings.vmss_name)
    assert build_signals(settings, ref, Observed()) is None  # type: ignore[arg-type]


def test_each_target_reads_its_own_metrics_and_only_the_vmss_target_its_balancer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SIGNALS_METRICS", "true")
    monkeypatch.setenv("SIGNALS_LOAD_BALANCER_ID", LB)
    settings = load_settings(SAMPLE)
    own = TargetRef(settings.subscription_id, settings.resource_group, settings.vmss_name)
    compute = Observed()
    source = build_signals(settings, own, compute)  # type: ignore[arg-type]
    assert names(source) == ["metrics", "lb"]
    [(_, metrics), (_, lb)] = source.sources  # type: ignore[union-attr]
    assert metrics.scale_set_name == settings.vmss_name  # type: ignore[attr-defined]
    assert compute.calls == 0  # the addresses are looked up when the balancer is read, not before
    assert lb._addresses() == {"0": "10.0.0.4"}  # type: ignore[attr-defined]
    assert compute.calls == 1
    other = TargetRef(settings.subscription_id, "other-rg", "other-vmss")
    source = build_signals(settings, other, Observed())  # type: ignore[arg-type]
    assert names(source) == ["metrics"]
    [(_, metrics)] = source.sources  # type: ignore[union-attr]
    assert metrics.scale_set_name == "other-vmss"  # type: ignore[attr-defined]


def test_the_logs_source_matches_computer_names_from_the_observation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNALS_LOGS_WORKSPACE_ID", "00000000-0000-0000-0000-000000000001")
    settings = load_settings(SAMPLE)
    own = TargetRef(settings.subscription_id, settings.resource_group, settings.vmss_name)
    source = build_signals(settings, own, Observed())  # type: ignore[arg-type]
    [(name, logs)] = source.sources  # type: ignore[union-attr]
    assert name == "logs" and logs._computer_names() == {"web000000": "0"}  # type: ignore[attr-defined]
