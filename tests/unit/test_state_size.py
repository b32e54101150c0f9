"""State too large for Azure Tables is a port error the service can record, and the fake store refuses
exactly what the Tables adapter refuses."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from rollout.adapters.tables import (
    MAX_STRING_PROPERTY_BYTES,
    EntityTooLargeError,
    TableStateStore,
    rollout_to_entity,
)
from rollout.model import EventKind, ModelSpec, Phase, Rollout, RolloutEvent, TargetRecord
from rollout.ports import PortError, RecordTooLargeError
from rollout.releases import ExtensionDefaults, build_release, desired_model, parse_release_name
from rollout.service import MAX_TEXT_CHARS, _clip
from tests.fakes import BASE_URL, FakeStore, v0_extension

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def rollout_with_script(chars: int) -> Rollout:
    name = parse_release_name("install_nginx.v1.sh")
    assert not isinstance(name, str)
    release = build_release(name, f"{BASE_URL}/install_nginx.v1.sh", b"#!/bin/bash\necho v1\n")
    baseline = ModelSpec(extension=dataclasses.replace(v0_extension(), settings={"script": "A" * chars}))
    return Rollout(
        id="install_nginx-v1-0123456789",
        target="rg:vmss",
        release=release,
        phase=Phase.CANARY,
        desired=desired_model(release, ExtensionDefaults()),
        baseline=baseline,
        created_at=NOW,
        updated_at=NOW,
        phase_since=NOW,
        last_progress_at=NOW,
    )


def test_the_tables_size_error_is_a_port_error_the_service_understands() -> None:
    assert issubclass(EntityTooLargeError, RecordTooLargeError) and issubclass(EntityTooLargeError, PortError)
    assert issubclass(EntityTooLargeError, ValueError)  # still an encoding error for direct callers


@pytest.mark.parametrize(("chars", "fits"), [(20_000, True), (MAX_STRING_PROPERTY_BYTES // 2, False)])
def test_the_fake_store_and_the_tables_adapter_refuse_the_same_rollouts(chars: int, fits: bool) -> None:
    rollout = rollout_with_script(chars)
    fake = FakeStore()
    checks = [
        lambda: rollout_to_entity(rollout),
        lambda: fake.check_fits(rollout),
        lambda: fake.insert_rollout(rollout),
        # The adapter's check_fits needs no connection: it only encodes.
        lambda: TableStateStore.check_fits(object.__new__(TableStateStore), rollout),
    ]
    for check in checks:
        if fits:
            check()
        else:
            with pytest.raises(RecordTooLargeError, match="'baseline'"):
                check()
    assert (len(fake.rollouts) == 1) is fits


def test_the_fake_store_refuses_oversized_targets_and_events() -> None:
    fake = FakeStore()
    big = ModelSpec(extension=dataclasses.replace(v0_extension(), settings={"script": "A" * 40_000}))
    with pytest.raises(RecordTooLargeError, match="'stable_model'"):
        fake.save_target(TargetRecord(key="rg:vmss", stable_model=big))
    assert fake.targets == {}
    event = RolloutEvent("r1", "rg:vmss", NOW, EventKind.ACTION_FAILED, "m", data={"blob": "x" * 40_000})
    with pytest.raises(RecordTooLargeError, match="'data'"):
        fake.append_event(event)
    assert fake.events == []


def test_long_text_is_cut_with_a_visible_marker() -> None:
    assert _clip("short") == "short"
    text = "y" * (MAX_TEXT_CHARS + 123)
    clipped = _clip(text)
    assert clipped.startswith("y" * MAX_TEXT_CHARS) and clipped.endswith("[123 more characters not stored]")
