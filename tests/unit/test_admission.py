"""Admission as tables of cases: (claim row, the partition's rollouts, observation, image reads) in;
(which rollout starts with which baseline and model, which are rejected and why, the events) out."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest

from rollout.admission import (
    IMAGE_MISSING,
    MAX_SUPERSEDED,
    Admission,
    admit,
    images_to_check,
    orchestration_problem,
    orphan_stopped,
    released_claim,
)
from rollout.model import EventKind, ExtensionSpec, FleetView, ModelSpec, Phase, Release, ReleaseKind, Rollout
from rollout.model import TargetRecord as Target
from rollout.policy import RolloutPolicy
from rollout.ports import MAX_COMMIT_RECORDS
from rollout.releases import ExtensionDefaults, desired_model
from tests.unit.test_machine import OLD, POLICY, T0, I, ext, fleet

NOW = T0 + timedelta(minutes=5)
KEY = "rg:vmss"
DEFAULTS = ExtensionDefaults()
OURS = "https://a/init"  # the release container: OLD's script comes from it


def release(version: int, kind: ReleaseKind = ReleaseKind.SCRIPT, image: str | None = None) -> Release:
    name = f"install_nginx.v{version}.image.json" if kind is ReleaseKind.IMAGE else f"install_nginx.v{version}.sh"
    return Release(kind, "install_nginx", version, name, f"{OURS}/{name}", f"{version:02d}" * 32, image_id=image)


def queued(version: int, minutes: int = 0, **changes: object) -> Rollout:
    rel = changes.pop("release", None) or release(version)
    assert isinstance(rel, Release)
    at = T0 + timedelta(minutes=minutes)
    return Rollout(
        id=f"install_nginx-v{version}-{minutes:010d}",
        target=KEY,
        release=rel,
        phase=Phase.QUEUED,
        desired=desired_model(rel, DEFAULTS),
        baseline=None,
        created_at=at,
        updated_at=at,
        phase_since=at,
        last_progress_at=at,
        reason="waiting for the active rollout to end",
        etag=f'W/"{version}-{minutes}"',
    ).evolve(**changes)


HEALTHY = fleet(I("0", latest=True), I("1", latest=True), I("2", latest=True), model=OLD)  # all on the model
IMAGE_FLEET = dataclasses.replace(HEALTHY, model=ModelSpec(extension=OLD.extension, image_id="/img/base"))


@dataclass(frozen=True)
class Case:
    name: str
    rollouts: tuple[Rollout, ...]
    fleet: FleetView | None = HEALTHY
    target: Target = field(default_factory=lambda: Target(key=KEY, etag='W/"t"'))
    images: dict[str, str | None] = field(default_factory=dict)
    started: str | None = None  # the id that starts, or None
    rejected: dict[str, str] = field(default_factory=dict)  # id -> the start of its reason
    needs_fleet: str | None = None
    policy: RolloutPolicy = POLICY


V1, V2, V3 = queued(1, 0), queued(2, 1), queued(3, 2)
IMG = queued(4, 3, release=release(4, ReleaseKind.IMAGE, "/img/v4"))

CASES = [
    Case("nothing queued: idle", (V1.evolve(phase=Phase.SUCCEEDED),), started=None),
    Case("one queued, no observation yet: ask for it, write nothing", (V1,), fleet=None, needs_fleet=V1.id),
    Case("one queued, pre-flight passes: it starts", (V1,), started=V1.id),
    Case(
        "three queued: the newest starts, the others are superseded in the same admission",
        (V1, V3, V2),
        started=V3.id,
        rejected={V1.id: "superseded by v3", V2.id: "superseded by v3"},
    ),
    Case(
        "newest by version, not by arrival: v3 received before v2 still wins",
        (V1, queued(3, 0), queued(2, 5)),
        started=queued(3, 0).id,
        rejected={V1.id: "superseded by v3", queued(2, 5).id: "superseded by v3"},
    ),
    Case(
        "not newer than the stable release: rejected before any observation",
        (V2,),
        fleet=None,
        target=Target(key=KEY, stable_version=2),
        rejected={V2.id: "v2 is not newer than the stable v2"},
    ),
    Case(
        "not newer, with older ones: all rejected in one admission",
        (V1, V2),
        fleet=None,
        target=Target(key=KEY, stable_version=5),
        rejected={V1.id: "superseded by v2", V2.id: "v2 is not newer than the stable v5"},
    ),
    Case(
        "an orchestration mode that is neither Uniform nor Flexible: rejected",
        (V1,),
        fleet=dataclasses.replace(HEALTHY, orchestration_mode="Other"),
        rejected={V1.id: "the scale set uses 'Other' orchestration; canary upgrades need Uniform or Flexible"},
    ),
    Case(
        "Flexible with the Automatic policy: rejected, saying Flexible supports Manual",
        (V1,),
        fleet=dataclasses.replace(HEALTHY, orchestration_mode="Flexible", upgrade_mode="Automatic"),
        rejected={V1.id: "the scale set's upgrade policy is Automatic: the platform would push the new model"},
    ),
    Case(
        "automatic upgrade mode: rejected",
        (V1,),
        fleet=dataclasses.replace(HEALTHY, upgrade_mode="Automatic"),
        rejected={V1.id: "the scale set's upgrade policy is Automatic"},
    ),
    Case(
        "too few healthy instances: rejected",
        (V2, V1),
        fleet=fleet(I("0"), I("1", state="Failed"), I("2", state="Failed"), model=OLD),
        rejected={V1.id: "superseded by v2", V2.id: "1 of 3 instances are healthy; at least 2 needed"},
        policy=dataclasses.replace(POLICY, min_healthy_instances=2),
    ),
    Case(
        "a script release on a scale set without the extension: rejected",
        (V1,),
        fleet=dataclasses.replace(HEALTHY, model=ModelSpec(image_id="/img/base")),
        rejected={V1.id: "the scale set has no extension named 'CustomScript'"},
    ),
    Case(
        "an extension that is not the Custom Script Extension: rejected",
        (V1,),
        fleet=dataclasses.replace(
            HEALTHY, model=ModelSpec(extension=dataclasses.replace(ext("x.sh"), publisher="Contoso", type="Thing"))
        ),
        rejected={V1.id: "the scale set's extension 'CustomScript' is Contoso/Thing"},
    ),
    Case(
        "an image release on a scale set without an image id: rejected",
        (IMG,),
        rejected={IMG.id: "the scale set does not use a managed image id"},
    ),
    Case(
        "an image release whose image cannot be read: rejected, the current image never needed",
        (IMG,),
        fleet=IMAGE_FLEET,
        images={"/img/v4": "403 AuthorizationFailed"},
        rejected={IMG.id: "the function app's identity cannot read image /img/v4 (403 AuthorizationFailed)"},
    ),
    Case(
        "an image release whose image does not exist: rejected",
        (IMG,),
        fleet=IMAGE_FLEET,
        images={"/img/v4": IMAGE_MISSING},
        rejected={IMG.id: "image /img/v4 does not exist"},
    ),
    Case(
        "the current image cannot be read (a rollback would write it): rejected",
        (IMG,),
        fleet=IMAGE_FLEET,
        images={"/img/v4": None, "/img/base": "403 AuthorizationFailed"},
        rejected={IMG.id: "the function app's identity cannot read image /img/base (the scale set's current image"},
    ),
    Case(
        "an image release, both images readable: it starts",
        (IMG,),
        fleet=IMAGE_FLEET,
        images={"/img/v4": None, "/img/base": None},
        started=IMG.id,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_admission(case: Case) -> None:
    result = admit(
        case.target,
        case.rollouts,
        case.fleet,
        case.policy,
        NOW,
        extension=DEFAULTS,
        release_container_url=OURS,
        images=case.images,
    )
    assert (result.started.id if result.started else None) == case.started
    assert {r.id for r in result.rejected} == set(case.rejected)
    for row in result.rejected:
        assert row.phase is Phase.REJECTED and row.updated_at == NOW
        assert row.reason.startswith(case.rejected[row.id]), (row.id, row.reason)
        assert row.etag == next(r.etag for r in case.rollouts if r.id == row.id)  # conditional on the version read
    assert (result.needs_fleet.id if result.needs_fleet else None) == case.needs_fleet
    rejected_events = {e.rollout_id: e.message for e in result.events if e.kind is EventKind.REJECTED}
    assert rejected_events == {r.id: r.reason for r in result.rejected}
    if case.started is None:
        assert result.claim is None
        assert not [e for e in result.events if e.kind is EventKind.PHASE_CHANGED]
    else:
        assert result.claim is not None and result.claim.active_rollout_id == case.started
        assert result.claim.etag == case.target.etag  # the claim is conditional on the row as read
        assert result.writes[0] == result.started


def test_a_start_records_the_baseline_the_model_and_the_fleet_it_saw() -> None:
    result = admit(Target(key=KEY), (V1,), HEALTHY, POLICY, NOW, extension=DEFAULTS, release_container_url=OURS)
    started = result.started
    assert started is not None and started.phase is Phase.CANARY and started.reason == "starting the canary"
    assert started.known_ids == ("0", "1", "2") and started.phase_since == NOW == started.last_progress_at
    # The baseline is the observed extension with the protected settings our container's scripts use.
    assert started.baseline is not None and started.baseline.extension is not None
    assert started.baseline.extension.same_public_model(HEALTHY.model.extension)  # type: ignore[arg-type]
    assert started.baseline.extension.protected_settings is not None
    assert started.desired == desired_model(V1.release, DEFAULTS, HEALTHY.model.extension)
    assert [e.message for e in result.events] == ["Queued -> Canary: pre-flight passed; baseline recorded"]


def test_an_extension_not_written_by_this_tool_starts_with_a_warning() -> None:
    foreign = dataclasses.replace(HEALTHY, model=ModelSpec(extension=ext("elsewhere.sh")))
    result = admit(Target(key=KEY), (V1,), foreign, POLICY, NOW, extension=DEFAULTS, release_container_url=None)
    assert result.started is not None and result.started.baseline is not None
    assert (
        result.started.baseline.extension is not None and result.started.baseline.extension.protected_settings is None
    )
    kinds = [e.kind for e in result.events]
    assert kinds == [EventKind.PHASE_CHANGED, EventKind.BASELINE_WARNING]


def test_the_stable_release_gives_the_baseline_its_protected_settings() -> None:
    stable_ext = ExtensionSpec(**{**OLD.extension.__dict__, "protected_settings": {"secret": "known"}})  # type: ignore[union-attr]
    target = Target(key=KEY, stable_version=0, stable_model=ModelSpec(extension=stable_ext))
    result = admit(target, (V1,), HEALTHY, POLICY, NOW, extension=DEFAULTS, release_container_url=None)
    assert result.started is not None and result.started.baseline is not None
    assert result.started.baseline.extension is not None
    assert result.started.baseline.extension.protected_settings == {"secret": "known"}


def test_a_state_too_large_to_store_rejects_the_candidate_with_the_reason() -> None:
    def too_large(started: Rollout, claim: Target) -> str | None:
        assert claim.active_rollout_id == started.id
        return "the rollout's state is too large to store"

    result = admit(Target(key=KEY), (V1, V2), HEALTHY, POLICY, NOW, extension=DEFAULTS, state_problem=too_large)
    assert result.started is None and result.claim is None
    assert {r.id: r.reason for r in result.rejected} == {
        V1.id: "superseded by v2",
        V2.id: "the rollout's state is too large to store",
    }


def test_more_superseded_releases_than_one_transaction_holds_are_rejected_first_and_nothing_starts() -> None:
    older = tuple(queued(1, n) for n in range(MAX_SUPERSEDED + 5))
    newest = queued(9, 999)
    first = admit(Target(key=KEY), (*older, newest), HEALTHY, POLICY, NOW, extension=DEFAULTS)
    assert first.started is None and first.claim is None and len(first.rejected) == MAX_COMMIT_RECORDS
    assert "starts after" in first.reason
    left = tuple(r for r in older if r.id not in {x.id for x in first.rejected})
    second = admit(Target(key=KEY), (*left, newest), HEALTHY, POLICY, NOW, extension=DEFAULTS)
    assert second.started is not None and second.started.id == newest.id
    assert len(second.writes) + 1 <= MAX_COMMIT_RECORDS  # claim + start + the rest: one transaction


def test_an_image_result_missing_for_an_image_to_check_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="no read result"):
        admit(Target(key=KEY), (IMG,), IMAGE_FLEET, POLICY, NOW, extension=DEFAULTS, images={})


def test_images_to_check_lists_the_release_image_then_the_current_one() -> None:
    assert images_to_check(IMG.release, IMAGE_FLEET) == ["/img/v4", "/img/base"]
    assert images_to_check(IMG.release, dataclasses.replace(IMAGE_FLEET, model=ModelSpec(image_id="/IMG/V4"))) == [
        "/img/v4"
    ]
    assert images_to_check(V1.release, IMAGE_FLEET) == []


@pytest.mark.parametrize(("mode", "ok"), [("Uniform", True), ("uniform", True), ("Flexible", True), ("Other", False)])
def test_the_orchestration_check_is_one_small_function(mode: str, ok: bool) -> None:
    assert (orchestration_problem(dataclasses.replace(HEALTHY, orchestration_mode=mode)) is None) is ok


def test_admission_is_pure_data() -> None:
    a = admit(Target(key=KEY), (V1, V2), HEALTHY, POLICY, NOW, extension=DEFAULTS)
    b = admit(Target(key=KEY), (V1, V2), HEALTHY, POLICY, NOW, extension=DEFAULTS)
    assert a == b and isinstance(a, Admission)
    assert isinstance(NOW, datetime)


HELD = Target(key=KEY, active_rollout_id=V1.id, stable_version=0, stable_model=OLD, etag='W/"t"')


@pytest.mark.parametrize(
    ("phase", "target", "in_flight", "released"),
    [
        (Phase.SUCCEEDED, HELD, False, True),
        (Phase.ROLLED_BACK, HELD, False, True),
        (Phase.ABORTED, HELD, False, True),
        (Phase.ABORTED, HELD, True, False),  # a reimage it sent may still land: it keeps the scale set
        (Phase.FAILED, HELD, False, False),  # a human decides
        (Phase.PROMOTING, HELD, False, False),
        (Phase.SUCCEEDED, dataclasses.replace(HELD, active_rollout_id="other"), False, False),
        (Phase.SUCCEEDED, None, False, False),
    ],
)
def test_released_claim(phase: Phase, target: Target | None, in_flight: bool, released: bool) -> None:
    rollout = V1.evolve(phase=phase, desired=ModelSpec(extension=ext("install_nginx.v1.sh")))
    claim = released_claim(target, rollout, NOW, in_flight)
    assert (claim is not None) is released
    if claim is not None:
        assert claim.active_rollout_id is None and claim.updated_at == NOW and claim.etag == HELD.etag
        if phase is Phase.SUCCEEDED:
            assert claim.stable_version == 1 and claim.stable_release == V1.release
            assert claim.stable_model == ModelSpec(extension=ext("install_nginx.v1.sh"))
        else:
            assert claim.stable_version == 0 and claim.stable_model == OLD


def test_an_orphan_is_stopped_as_aborted_with_the_holder_named() -> None:
    stopped = orphan_stopped(V1.evolve(phase=Phase.BAKING), "install_nginx-v2-x", NOW)
    assert stopped.phase is Phase.ABORTED and stopped.phase_since == NOW and stopped.etag == V1.etag
    assert "Baking without holding the scale set (install_nginx-v2-x holds it" in stopped.reason


def test_a_start_on_a_fleet_left_mixed_names_the_instances_off_the_model() -> None:
    mixed = fleet(I("0", latest=True), I("1"), I("2", latest=True), model=OLD)
    result = admit(Target(key=KEY), [queued(2)], mixed, POLICY, NOW, extension=DEFAULTS, release_container_url=OURS)
    assert result.started is not None
    [warning] = [e.message for e in result.events if e.kind is EventKind.BASELINE_WARNING]
    assert warning.startswith("instances 1 do not run the scale set's current model")
