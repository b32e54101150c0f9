"""rollout.orchestration: the pre-flight rule for both orchestration modes, and the "latest model"
reading a Flexible scale set's instances take from the rollout's records."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rollout.model import ExtensionSpec, FleetView, InstanceView, ModelSpec, Phase, Release, ReleaseKind, Rollout
from rollout.orchestration import orchestration_problem, recorded_model, unsent_after, with_recorded_models

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def spec(uri: str) -> ModelSpec:
    return ModelSpec(
        extension=ExtensionSpec(
            "CustomScript", "Microsoft.Azure.Extensions", "CustomScript", "2.1", {"fileUris": [uri]}
        )
    )


BASE, RELEASE = spec("https://x/install.sh"), spec("https://x/install.v1.sh")


def fleet(model: ModelSpec, ids: tuple[str, ...], *, reported: bool = False, mode: str = "Flexible") -> FleetView:
    views = tuple(InstanceView(i, latest_model_applied=True, provisioning_state="Succeeded") for i in ids)
    return FleetView(model, "Succeeded", views, orchestration_mode=mode, model_applied_reported=reported)


def rollout(**records: object) -> Rollout:
    release = Release(ReleaseKind.SCRIPT, "install", 1, "install.v1.sh", "https://x/install.v1.sh", "0" * 64)
    base = Rollout("r1", "rg:vmss", release, Phase.CANARY, RELEASE, BASE, T0, T0, T0, T0)
    return base.evolve(known_ids=("a", "b", "c"), **records)


@pytest.mark.parametrize(
    ("mode", "upgrade", "problem"),
    [
        ("Uniform", "Manual", None),
        ("Flexible", "Manual", None),
        ("flexible", "manual", None),
        ("Flexible", "Rolling", "upgrade policy is Rolling"),
        ("Flexible", "Automatic", "upgrade policy is Automatic"),
        ("Uniform", "Automatic", "upgrade policy is Automatic"),
        ("Other", "Manual", "need Uniform or Flexible"),
    ],
)
def test_orchestration_problem(mode: str, upgrade: str, problem: str | None) -> None:
    found = orchestration_problem(FleetView(BASE, "Succeeded", (), orchestration_mode=mode, upgrade_mode=upgrade))
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_records_name_the_model_each_instance_runs() -> None:
    r = rollout(upgraded_ids=("a", "b"), rollback_ids=("b",))
    assert recorded_model(r, "a") is RELEASE
    assert recorded_model(r, "b") is BASE
    assert recorded_model(r, "c") is BASE
    assert recorded_model(r, "new") is None  # created during the rollout: unknown


def latest(view: FleetView) -> dict[str, bool]:
    return {v.instance_id: v.latest_model_applied for v in view.instances}


def test_on_the_release_model_only_the_upgraded_are_latest() -> None:
    r = rollout(upgraded_ids=("a",))
    observed = fleet(RELEASE, ("a", "b", "c", "new"))
    assert latest(with_recorded_models(observed, r)) == {"a": True, "b": False, "c": False, "new": False}


def test_before_the_model_write_every_known_instance_is_latest() -> None:
    observed = fleet(BASE, ("a", "b", "c"))
    assert latest(with_recorded_models(observed, rollout())) == {"a": True, "b": True, "c": True}


def test_after_the_rollback_write_the_upgraded_are_behind_until_moved_back() -> None:
    r = rollout(phase=Phase.ROLLING_BACK, upgraded_ids=("a", "b"), rollback_ids=("a",))
    observed = fleet(BASE, ("a", "b", "c", "new"))
    assert latest(with_recorded_models(observed, r)) == {"a": True, "b": False, "c": True, "new": False}


def test_a_reported_reading_is_left_alone() -> None:
    observed = fleet(RELEASE, ("a", "b"), reported=True, mode="Uniform")
    assert with_recorded_models(observed, rollout()) is observed


def test_an_upgrade_not_known_to_have_reached_arm_leaves_the_instance_on_an_unknown_model() -> None:
    forward = rollout(upgraded_ids=("a",), unsent_ids=("a",))
    assert recorded_model(forward, "a") is None
    assert latest(with_recorded_models(fleet(RELEASE, ("a", "b")), forward)) == {"a": False, "b": False}
    # Back on the baseline model: "a" may have taken the release after all, so it is moved back too.
    assert latest(with_recorded_models(fleet(BASE, ("a", "b")), forward)) == {"a": False, "b": True}
    back = rollout(phase=Phase.ROLLING_BACK, upgraded_ids=("a",), rollback_ids=("a",), unsent_ids=("a",))
    assert recorded_model(back, "a") is None
    assert latest(with_recorded_models(fleet(BASE, ("a", "b")), back)) == {"a": False, "b": True}


def test_unsent_after_adds_the_missed_and_drops_the_reached() -> None:
    assert unsent_after(("a", "b"), [("b", "c")], [("d",)]) == ("a", "d")
    assert unsent_after((), [], [("x", "y")]) == ("x", "y")
    assert unsent_after(("x",), [("x",)], []) == ()


def test_the_fleet_view_says_null_where_arm_does_not_report_the_latest_model() -> None:
    from rollout.views import fleet_json

    flexible_view = fleet_json(fleet(BASE, ("vm_1", "vm_2")))
    assert flexible_view["summary"]["onLatestModel"] is None
    assert [i["latestModelApplied"] for i in flexible_view["instances"]] == [None, None]
    uniform_view = fleet_json(fleet(BASE, ("0", "1"), reported=True, mode="Uniform"))
    assert uniform_view["summary"]["onLatestModel"] == 2
