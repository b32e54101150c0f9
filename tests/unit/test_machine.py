"""The decider as tables of cases: (status, observation, policy, now) in; (status, actions) out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from rollout.analysis import Verdict, assess_canary, assess_instance
from rollout.machine import (
    CommandError,
    Notify,
    ReimageInstances,
    UpdateModel,
    UpgradeInstances,
    Verb,
    apply_command,
    decide,
)
from rollout.model import (
    EventKind,
    ExtensionSpec,
    FleetView,
    Health,
    InstanceView,
    ModelSpec,
    Phase,
    ProbeResult,
    Release,
    ReleaseKind,
    Rollout,
)
from rollout.policy import RolloutPolicy

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def ext(script: str) -> ExtensionSpec:
    return ExtensionSpec(
        name="CustomScript",
        publisher="Microsoft.Azure.Extensions",
        type="CustomScript",
        type_handler_version="2.1",
        settings={"fileUris": [f"https://a/init/{script}"], "commandToExecute": f"bash {script}"},
        protected_settings={"managedIdentity": {}},
    )


OLD = ModelSpec(extension=ext("install_nginx.sh"))
NEW = ModelSpec(extension=ext("install_nginx.v1.sh"))
RELEASE = Release(
    ReleaseKind.SCRIPT, "install_nginx", 1, "install_nginx.v1.sh", "https://a/init/install_nginx.v1.sh", "ab" * 32
)
OK = ProbeResult(True, "200 in 2 ms")
BAD = ProbeResult(False, "500 Internal Server Error")


def rollout(phase: Phase, **changes: object) -> Rollout:
    base = Rollout(
        id="r1",
        target="rg:vmss",
        release=RELEASE,
        phase=phase,
        desired=NEW,
        baseline=OLD,
        created_at=T0,
        updated_at=T0,
        phase_since=T0,
        last_progress_at=T0,
    )
    return base.evolve(**changes)


@dataclass(frozen=True)
class I:  # noqa: E742 - a short name keeps the tables readable
    """One instance in a table row: id, on the new model?, state, probe."""

    id: str
    latest: bool = False
    state: str = "Succeeded"
    probe: ProbeResult | None = OK
    ext: str = "Succeeded"

    def view(self) -> InstanceView:
        return InstanceView(
            instance_id=self.id,
            latest_model_applied=self.latest,
            provisioning_state=self.state,
            power_state="running",
            extension_status=self.ext,
            private_ip=f"10.0.0.{self.id}",
            probe=self.probe,
        )


def fleet(*instances: I, model: ModelSpec = NEW, state: str = "Succeeded") -> FleetView:
    readback = (
        ModelSpec(
            extension=ExtensionSpec(**{**model.extension.__dict__, "protected_settings": None}),
            image_id=model.image_id,
        )
        if model.extension
        else model
    )
    return FleetView(model=readback, provisioning_state=state, instances=tuple(i.view() for i in instances))


POLICY = RolloutPolicy(
    bake_seconds=300, batch_size=2, max_unavailable=2, failure_threshold=3, progress_deadline_seconds=600
)


@dataclass(frozen=True)
class Case:
    name: str
    rollout: Rollout
    fleet: FleetView
    phase: Phase
    actions: tuple[object, ...] = ()
    now: datetime = T0 + timedelta(seconds=30)
    check: dict[str, object] = field(default_factory=dict)
    policy: RolloutPolicy = POLICY


CASES = [
    Case(
        "canary: model not written yet -> write it",
        rollout(Phase.CANARY),
        fleet(I("0"), I("1"), model=OLD),
        Phase.CANARY,
        (UpdateModel(NEW, "release"),),
    ),
    Case(
        "canary: model write still running -> wait",
        rollout(Phase.CANARY),
        fleet(I("0"), model=OLD, state="Updating"),
        Phase.CANARY,
        (),
    ),
    Case(
        "canary: model written -> upgrade the lowest healthy instance",
        rollout(Phase.CANARY),
        fleet(I("2"), I("10"), I("1", probe=BAD), I("3")),
        Phase.CANARY,
        (UpgradeInstances(("2",), "canary"),),
        check={"canary_ids": ("2",), "upgraded_ids": ("2",)},
    ),
    Case(
        "canary: two canaries by policy",
        rollout(Phase.CANARY),
        fleet(I("0"), I("1"), I("2")),
        Phase.CANARY,
        (UpgradeInstances(("0", "1"), "canary"),),
        check={"canary_ids": ("0", "1")},
        policy=RolloutPolicy(canary_count=2),
    ),
    Case(
        "canary: updating -> wait, nothing issued again",
        rollout(Phase.CANARY, canary_ids=("0",), batch_ids=("0",), batch_started_at=T0, upgraded_ids=("0",)),
        fleet(I("0", state="Updating", probe=None), I("1")),
        Phase.CANARY,
        (),
    ),
    Case(
        "canary: never started, inside the retry window -> wait",
        rollout(Phase.CANARY, canary_ids=("0",), batch_ids=("0",), batch_started_at=T0, upgraded_ids=("0",)),
        fleet(I("0"), I("1")),
        Phase.CANARY,
        (),
    ),
    Case(
        "canary: never started, past the retry window -> re-issue",
        rollout(Phase.CANARY, canary_ids=("0",), batch_ids=("0",), batch_started_at=T0, upgraded_ids=("0",)),
        fleet(I("0"), I("1")),
        Phase.CANARY,
        (UpgradeInstances(("0",), "retry"),),
        now=T0 + timedelta(seconds=301),
    ),
    Case(
        "canary: the call failed -> re-issue at once",
        rollout(Phase.CANARY, canary_ids=("0",), batch_ids=("0",), batch_started_at=None, upgraded_ids=("0",)),
        fleet(I("0"), I("1")),
        Phase.CANARY,
        (UpgradeInstances(("0",), "canary"),),
    ),
    Case(
        "canary: latest and healthy -> bake",
        rollout(Phase.CANARY, canary_ids=("0",), batch_ids=("0",), upgraded_ids=("0",)),
        fleet(I("0", latest=True), I("1")),
        Phase.BAKING,
        (),
        check={"batch_ids": ()},
    ),
    Case(
        "canary: healthy and bake 0 -> straight to the first batch",
        rollout(Phase.CANARY, canary_ids=("0",), batch_ids=("0",), upgraded_ids=("0",), skip_bake=True),
        fleet(I("0", latest=True), I("1"), I("2"), I("3")),
        Phase.PROMOTING,
        (UpgradeInstances(("1", "2"), "batch"),),
        check={"batch_number": 1},
    ),
    Case(
        "canary: unhealthy once -> count, keep going",
        rollout(Phase.CANARY, canary_ids=("0",), upgraded_ids=("0",)),
        fleet(I("0", latest=True, probe=BAD), I("1"), I("2")),
        Phase.CANARY,
        (),
        check={"unhealthy_streak": 1},
    ),
    Case(
        "canary: unhealthy the third time -> roll back",
        rollout(Phase.CANARY, canary_ids=("0",), upgraded_ids=("0",), unhealthy_streak=2),
        fleet(I("0", latest=True, probe=BAD), I("1"), I("2")),
        Phase.ROLLING_BACK,
        (
            Notify(
                "install_nginx v1: rolling back: canary unhealthy: instance 0: probe failed: 500 Internal Server "
                "Error, 3 consecutive observations"
            ),
        ),
    ),
    Case(
        "canary: extension failed -> roll back at once",
        rollout(Phase.CANARY, canary_ids=("0",), upgraded_ids=("0",)),
        fleet(I("0", latest=True, state="Failed", ext="Failed"), I("1")),
        Phase.ROLLING_BACK,
        None,
    ),
    Case(
        "canary: unhealthy, but so is most of the baseline -> inconclusive, no count",
        rollout(Phase.CANARY, canary_ids=("0",), upgraded_ids=("0",)),
        fleet(I("0", latest=True, probe=BAD), I("1", probe=BAD), I("2", probe=BAD)),
        Phase.CANARY,
        (),
        check={"unhealthy_streak": 0},
    ),
    Case(
        "canary: no progress before the deadline -> roll back",
        rollout(Phase.CANARY, canary_ids=("0",), upgraded_ids=("0",), batch_started_at=T0),
        fleet(I("0", state="Updating", probe=None), I("1")),
        Phase.ROLLING_BACK,
        None,
        now=T0 + timedelta(seconds=601),
    ),
    Case(
        "baking: healthy, not long enough -> wait",
        rollout(Phase.BAKING, canary_ids=("0",), upgraded_ids=("0",)),
        fleet(I("0", latest=True), I("1")),
        Phase.BAKING,
        (),
        now=T0 + timedelta(seconds=299),
    ),
    Case(
        "baking: healthy for the whole bake -> first batch",
        rollout(Phase.BAKING, canary_ids=("0",), upgraded_ids=("0",)),
        fleet(I("0", latest=True), I("1"), I("2"), I("3")),
        Phase.PROMOTING,
        (UpgradeInstances(("1", "2"), "batch"),),
        now=T0 + timedelta(seconds=300),
    ),
    Case(
        "baking: inconclusive -> the bake clock restarts",
        rollout(Phase.BAKING, canary_ids=("0",), upgraded_ids=("0",)),
        fleet(I("0", latest=True, probe=BAD), I("1", probe=BAD)),
        Phase.BAKING,
        (),
        now=T0 + timedelta(seconds=200),
        check={"phase_since": T0 + timedelta(seconds=200)},
    ),
    Case(
        "baking: model changed by someone else -> Failed",
        rollout(Phase.BAKING, canary_ids=("0",), upgraded_ids=("0",)),
        fleet(I("0"), I("1"), model=OLD),
        Phase.FAILED,
        None,
        check={"failed_from": Phase.BAKING},
    ),
    Case(
        "canary: model changed by someone else after the canary started -> Failed, not overwritten",
        rollout(Phase.CANARY, canary_ids=("0",), batch_ids=("0",), upgraded_ids=("0",)),
        fleet(I("0", latest=True), I("1", latest=True), model=OLD),
        Phase.FAILED,
        (
            Notify(
                "install_nginx v1 stopped: the scale set model no longer holds this release "
                "(changed outside the rollout)"
            ),
        ),
    ),
    Case(
        "promoting: batch limited by max unavailable (one instance already down)",
        rollout(Phase.PROMOTING, canary_ids=("0",), upgraded_ids=("0",)),
        fleet(I("0", latest=True), I("1"), I("2"), I("3"), I("4", probe=BAD)),
        Phase.PROMOTING,
        (UpgradeInstances(("1", "4"), "batch"),),
    ),
    Case(
        "promoting: no budget -> wait",
        rollout(Phase.PROMOTING, canary_ids=("0",), upgraded_ids=("0",)),
        fleet(I("0", latest=True), I("1", state="Updating", probe=None), I("2", state="Updating", probe=None), I("3")),
        Phase.PROMOTING,
        (),
    ),
    Case(
        "promoting: batch done -> next batch in the same tick",
        rollout(Phase.PROMOTING, canary_ids=("0",), upgraded_ids=("0", "1", "2"), batch_ids=("1", "2"), batch_number=1),
        fleet(I("0", latest=True), I("1", latest=True), I("2", latest=True), I("3"), I("4"), I("5")),
        Phase.PROMOTING,
        (UpgradeInstances(("3", "4"), "batch"),),
        check={"batch_number": 2},
    ),
    Case(
        "promoting: batch unhealthy three times -> roll back",
        rollout(Phase.PROMOTING, canary_ids=("0",), upgraded_ids=("0", "1"), batch_ids=("1",), unhealthy_streak=2),
        fleet(I("0", latest=True), I("1", latest=True, probe=BAD), I("2"), I("3")),
        Phase.ROLLING_BACK,
        None,
    ),
    Case(
        "promoting: all latest and healthy -> Succeeded",
        rollout(Phase.PROMOTING, canary_ids=("0",), upgraded_ids=("0", "1")),
        fleet(I("0", latest=True), I("1", latest=True)),
        Phase.SUCCEEDED,
        None,
    ),
    Case(
        "promoting: promote-full -> everything left in one call",
        rollout(Phase.PROMOTING, canary_ids=("0",), upgraded_ids=("0",), promote_full=True),
        fleet(I("0", latest=True), I("1"), I("2"), I("3"), I("4")),
        Phase.PROMOTING,
        (UpgradeInstances(("1", "2", "3", "4"), "batch"),),
    ),
    Case(
        "rolling back: model still new -> restore the baseline",
        rollout(Phase.ROLLING_BACK, upgraded_ids=("0", "1")),
        fleet(I("0", latest=True), I("1", latest=True), I("2")),
        Phase.ROLLING_BACK,
        (UpdateModel(OLD, "rollback"),),
    ),
    Case(
        "rolling back: baseline restored -> one call for every upgraded instance",
        rollout(Phase.ROLLING_BACK, upgraded_ids=("0", "1")),
        fleet(I("0"), I("1", probe=BAD), I("2", latest=True), model=OLD),
        Phase.ROLLING_BACK,
        (UpgradeInstances(("0", "1"), "rollback"),),
        check={"rollback_ids": ("0", "1")},
    ),
    Case(
        "rolling back: all back, reimaged and healthy -> RolledBack",
        rollout(
            Phase.ROLLING_BACK,
            upgraded_ids=("0", "1"),
            rollback_ids=("0", "1"),
            reimaged_ids=("0", "1"),
            rollback_reason="x",
        ),
        fleet(I("0", latest=True), I("1", latest=True), I("2", latest=True), model=OLD),
        Phase.ROLLED_BACK,
        None,
    ),
    Case(
        "rolling back: back on the baseline model -> reimage every touched instance in one call",
        rollout(Phase.ROLLING_BACK, upgraded_ids=("0", "1"), rollback_ids=("0", "1")),
        fleet(I("0", latest=True), I("1", latest=True), I("2", latest=True), model=OLD),
        Phase.ROLLING_BACK,
        (ReimageInstances(("0", "1")),),
        # Saved as intended, not as done: the service confirms it once the call is sent.
        check={"reimage_pending": ("0", "1"), "reimage_requested_at": T0 + timedelta(seconds=30), "reimaged_ids": ()},
    ),
    Case(
        "rolling back: a reimage saved but not confirmed sent -> wait, not RolledBack",
        rollout(
            Phase.ROLLING_BACK,
            upgraded_ids=("0",),
            rollback_ids=("0",),
            reimage_pending=("0",),
            reimage_requested_at=T0,
        ),
        fleet(I("0", latest=True), I("1", latest=True), model=OLD),
        Phase.ROLLING_BACK,
        (),
        now=T0 + timedelta(seconds=POLICY.upgrade_retry_seconds - 1),
        check={"reimage_pending": ("0",), "reimage_requested_at": T0},
    ),
    Case(
        "rolling back: a reimage never confirmed sent within upgrade_retry_seconds -> send it again",
        rollout(
            Phase.ROLLING_BACK,
            upgraded_ids=("0",),
            rollback_ids=("0",),
            reimage_pending=("0",),
            reimage_requested_at=T0,
        ),
        fleet(I("0", latest=True), I("1", latest=True), model=OLD),
        Phase.ROLLING_BACK,
        (ReimageInstances(("0",)),),
        now=T0 + timedelta(seconds=POLICY.upgrade_retry_seconds),
        check={"reimage_pending": ("0",), "reimage_requested_at": T0 + timedelta(seconds=POLICY.upgrade_retry_seconds)},
    ),
    Case(
        "rolling back: a reimage whose call failed -> send it again at once",
        rollout(Phase.ROLLING_BACK, upgraded_ids=("0",), rollback_ids=("0",), reimage_pending=("0",)),
        fleet(I("0", latest=True), I("1", latest=True), model=OLD),
        Phase.ROLLING_BACK,
        (ReimageInstances(("0",)),),
        check={"reimage_requested_at": T0 + timedelta(seconds=30)},
    ),
    Case(
        "rolling back: ROLLBACK_REIMAGE off, all back and healthy -> RolledBack without reimage",
        rollout(Phase.ROLLING_BACK, upgraded_ids=("0",), rollback_ids=("0",)),
        fleet(I("0", latest=True), I("1", latest=True), model=OLD),
        Phase.ROLLED_BACK,
        (Notify("install_nginx v1 rolled back: "),),
        policy=RolloutPolicy(rollback_reimage=False),
    ),
    Case(
        "rolling back: reimaged but the instance is still broken -> count",
        rollout(Phase.ROLLING_BACK, upgraded_ids=("0",), rollback_ids=("0",), reimaged_ids=("0",)),
        fleet(I("0", latest=True, state="Failed", ext="Failed"), I("1", latest=True), model=OLD),
        Phase.ROLLING_BACK,
        (),
        check={"unhealthy_streak": 1},
    ),
    Case(
        "rolling back: ROLLBACK_REIMAGE off, still broken at the threshold -> reimage it",
        rollout(Phase.ROLLING_BACK, upgraded_ids=("0", "1"), rollback_ids=("0", "1"), unhealthy_streak=2),
        fleet(I("0", latest=True, probe=BAD), I("1", latest=True), I("2", latest=True), model=OLD),
        Phase.ROLLING_BACK,
        (ReimageInstances(("0",)),),
        check={"reimage_pending": ("0",), "reimaged_ids": (), "unhealthy_streak": 0},
        policy=RolloutPolicy(rollback_reimage=False, failure_threshold=3),
    ),
    Case(
        "rolling back: reimaged and still broken -> Failed, a human decides",
        rollout(Phase.ROLLING_BACK, upgraded_ids=("0",), rollback_ids=("0",), reimaged_ids=("0",), unhealthy_streak=2),
        fleet(I("0", latest=True, probe=BAD), I("1", latest=True), model=OLD),
        Phase.FAILED,
        None,
        check={"failed_from": Phase.ROLLING_BACK},
    ),
    Case(
        "paused: nothing moves",
        rollout(Phase.PAUSED, resume_to=Phase.PROMOTING, upgraded_ids=("0",)),
        fleet(I("0", latest=True), I("1")),
        Phase.PAUSED,
        (),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decide(case: Case) -> None:
    decision = decide(case.rollout, case.fleet, case.policy, case.now)
    assert decision.rollout.phase is case.phase, decision.rollout.reason
    if case.actions is not None:
        assert decision.actions == case.actions
    for name, value in case.check.items():
        assert getattr(decision.rollout, name) == value, name
    if decision.rollout.phase is not case.rollout.phase:
        assert any(e.kind is EventKind.PHASE_CHANGED for e in decision.events), "every transition writes an event"


def test_the_decider_does_not_change_what_it_does_not_decide() -> None:
    r = rollout(Phase.PAUSED, resume_to=Phase.BAKING)
    decision = decide(r, fleet(I("0")), POLICY, T0 + timedelta(hours=5))
    assert decision.rollout == r and decision.events == () and decision.actions == ()


@pytest.mark.parametrize(
    ("phase", "verb", "kwargs", "expected"),
    [
        (Phase.PROMOTING, "abort", {}, Phase.ABORTED),
        (Phase.CANARY, "abort", {"rollback": True}, Phase.ROLLING_BACK),
        (Phase.QUEUED, "abort", {"rollback": True}, Phase.ABORTED),
        (Phase.FAILED, "abort", {}, Phase.ABORTED),
        (Phase.BAKING, "pause", {}, Phase.PAUSED),
        (Phase.BAKING, "promote", {}, Phase.BAKING),
        (Phase.PROMOTING, "promote-full", {}, Phase.PROMOTING),
    ],
)
def test_commands(phase: Phase, verb: str, kwargs: dict[str, bool], expected: Phase) -> None:
    decision = apply_command(rollout(phase), verb, T0, actor="alice", reason="why", **kwargs)
    assert decision.rollout.phase is expected
    assert decision.events and decision.events[0].actor == "alice"


@pytest.mark.parametrize(
    ("phase", "verb", "message"),
    [
        (Phase.SUCCEEDED, "abort", "already Succeeded"),
        (Phase.PROMOTING, "resume", "only a paused rollout"),
        (Phase.ROLLING_BACK, "pause", "can be paused"),
        (Phase.PROMOTING, "promote", "promote applies to"),
        (Phase.CANARY, "retry", "only a Failed rollout"),
        (Phase.CANARY, "explode", "unknown command"),
    ],
)
def test_commands_that_do_not_apply_are_refused(phase: Phase, verb: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        apply_command(rollout(phase), verb, T0)


def test_resume_returns_to_the_paused_phase_and_restarts_the_clocks() -> None:
    later = T0 + timedelta(hours=2)
    decision = apply_command(rollout(Phase.PAUSED, resume_to=Phase.BAKING), "resume", later)
    assert decision.rollout.phase is Phase.BAKING
    assert decision.rollout.phase_since == later and decision.rollout.last_progress_at == later


def test_retry_of_a_failed_rollback_rolls_back_again() -> None:
    decision = apply_command(rollout(Phase.FAILED, failed_from=Phase.ROLLING_BACK), "retry", T0)
    assert decision.rollout.phase is Phase.ROLLING_BACK


@pytest.mark.parametrize(
    ("instance", "health"),
    [
        (I("0"), Health.HEALTHY),
        (I("0", probe=BAD), Health.UNHEALTHY),
        (I("0", probe=None), Health.UNHEALTHY),
        (I("0", state="Updating"), Health.UPDATING),
        (I("0", ext="Transitioning"), Health.UPDATING),
        (I("0", state="Failed"), Health.FAILED),
        (I("0", ext="Failed"), Health.FAILED),
    ],
)
def test_assess_instance(instance: I, health: Health) -> None:
    assert assess_instance(instance.view()) is health


def test_assess_instance_reads_vm_health_and_power_state() -> None:
    view = I("0").view()
    assert assess_instance(InstanceView(**{**view.__dict__, "vm_health": "Unhealthy"})) is Health.UNHEALTHY
    assert assess_instance(InstanceView(**{**view.__dict__, "power_state": "stopped"})) is Health.UNHEALTHY


@pytest.mark.parametrize(
    ("canaries", "baseline", "verdict"),
    [
        ([I("0", latest=True)], [I("1")], Verdict.SUCCESSFUL),
        ([I("0", latest=True, probe=BAD)], [I("1"), I("2")], Verdict.UNHEALTHY),
        ([I("0", latest=True, probe=BAD)], [I("1", probe=BAD), I("2", probe=BAD)], Verdict.INCONCLUSIVE),
        ([I("0", latest=True, probe=BAD)], [I("1", probe=BAD), I("2")], Verdict.UNHEALTHY),
        ([I("0", latest=True, ext="Failed")], [I("1")], Verdict.FAILED),
        ([I("0")], [I("1")], Verdict.PENDING),
        ([], [I("1")], Verdict.PENDING),
    ],
)
def test_assess_canary(canaries: list[I], baseline: list[I], verdict: Verdict) -> None:
    assert assess_canary([c.view() for c in canaries], [b.view() for b in baseline]).verdict is verdict


@pytest.mark.parametrize(
    ("policy", "fleet_size", "batch", "unavailable"),
    [
        (RolloutPolicy(), 5, 1, 1),
        (RolloutPolicy(), 10, 2, 2),
        (RolloutPolicy(), 3, 1, 1),
        (RolloutPolicy(), 1000, 200, 200),
        (RolloutPolicy(batch_size=7, max_unavailable=3), 1000, 7, 3),
        (RolloutPolicy(batch_percent=50, max_unavailable_percent=25), 10, 5, 3),
    ],
)
def test_batch_sizes(policy: RolloutPolicy, fleet_size: int, batch: int, unavailable: int) -> None:
    assert policy.calculate_batch_size(fleet_size) == batch
    assert policy.calculate_max_unavailable(fleet_size) == unavailable


def test_a_policy_that_could_never_progress_is_refused() -> None:
    with pytest.raises(ValueError, match="max_unavailable_percent must be between 1 and 100"):
        RolloutPolicy(max_unavailable_percent=0)


def test_retry_after_drift_starts_again_from_the_canary_and_rewrites_the_model() -> None:
    failed = rollout(Phase.FAILED, failed_from=Phase.PROMOTING, canary_ids=("0",), upgraded_ids=("0", "1"))
    retried = apply_command(failed, "retry", T0).rollout
    assert retried.phase is Phase.CANARY and retried.canary_ids == ()
    decision = decide(retried, fleet(I("0", latest=True), I("1", latest=True), I("2"), model=OLD), POLICY, T0)
    assert decision.actions == (UpdateModel(NEW, "release"),)


def slow(ms: float) -> ProbeResult:
    return ProbeResult(True, f"200 in {ms:.0f} ms", ms)


@pytest.mark.parametrize(
    ("canary_ms", "baseline_ms", "verdict"),
    [
        ([400.0], [20.0, 25.0, 30.0], Verdict.UNHEALTHY),  # 16x and 375 ms slower
        ([3.0], [1.0, 1.0, 1.0], Verdict.SUCCESSFUL),  # 3x but only 2 ms: loopback noise
        ([60.0], [30.0, 30.0], Verdict.SUCCESSFUL),  # 2x and 30 ms: under the 50 ms floor
        ([200.0, 20.0, 25.0], [20.0, 22.0], Verdict.SUCCESSFUL),  # the median, not one slow probe
        ([400.0], [], Verdict.SUCCESSFUL),  # nothing to compare with
    ],
)
def test_latency_judgement(canary_ms: list[float], baseline_ms: list[float], verdict: Verdict) -> None:
    canaries = [I(str(i), latest=True, probe=slow(ms)).view() for i, ms in enumerate(canary_ms)]
    baseline = [I(str(10 + i), probe=slow(ms)).view() for i, ms in enumerate(baseline_ms)]
    assessment = assess_canary(canaries, baseline, latency_ratio=2.0, latency_min_delta_ms=50)
    assert assessment.verdict is verdict, assessment.reason


def test_latency_is_not_judged_when_off() -> None:
    canaries = [I("0", latest=True, probe=slow(900)).view()]
    baseline = [I("1", probe=slow(10)).view()]
    assert assess_canary(canaries, baseline).verdict is Verdict.SUCCESSFUL


def test_a_slow_canary_counts_towards_rollback_when_latency_is_judged() -> None:
    r = rollout(Phase.BAKING, canary_ids=("0",), upgraded_ids=("0",), unhealthy_streak=2)
    observed = fleet(I("0", latest=True, probe=slow(500)), I("1", probe=slow(20)), I("2", probe=slow(22)))
    decision = decide(r, observed, RolloutPolicy(latency_ratio=3, failure_threshold=3), T0)
    assert decision.rollout.phase is Phase.ROLLING_BACK
    assert "canary median latency 500 ms vs baseline 21 ms" in decision.rollout.rollback_reason


def test_writes_wait_for_arms_retry_after_but_observation_goes_on() -> None:
    hold = T0 + timedelta(seconds=60)
    r = rollout(Phase.PROMOTING, canary_ids=("0",), upgraded_ids=("0",), hold_until=hold)
    observed = fleet(I("0", latest=True), I("1"), I("2"), I("3"))
    waiting = decide(r, observed, POLICY, T0 + timedelta(seconds=30))
    assert waiting.actions == () and waiting.rollout.batch_ids == ()
    assert waiting.rollout.reason == "ARM throttled writes to the scale set: next one in 30 s"
    after = decide(r, observed, POLICY, hold)
    assert after.actions == (UpgradeInstances(("1", "2"), "batch"),)
    # A step that needs no write is not held: a healthy canary still moves on to Baking.
    canary = rollout(Phase.CANARY, canary_ids=("0",), upgraded_ids=("0",), hold_until=hold)
    assert decide(canary, observed, POLICY, T0).rollout.phase is Phase.BAKING


def test_every_verb_has_a_transition_and_an_unknown_one_is_refused_with_the_list() -> None:
    # Each verb either applies or is refused with a CommandError, in every phase: none falls through.
    applied = set()
    for verb in Verb:
        for phase in Phase:
            start = rollout(phase, resume_to=Phase.BAKING if phase is Phase.PAUSED else None)
            try:
                apply_command(start, verb, T0)
            except CommandError:
                continue
            applied.add(verb)
    assert applied == set(Verb)
    assert [v.value for v in Verb] == ["abort", "pause", "resume", "promote", "promote-full", "retry"]
    with pytest.raises(CommandError, match="expected one of abort, pause, resume, promote, promote-full, retry$"):
        apply_command(rollout(Phase.CANARY), "resum", T0)  # type: ignore[arg-type]


def test_pause_records_where_to_resume_and_a_stop_records_where_it_failed_from() -> None:
    paused = apply_command(rollout(Phase.BAKING), Verb.PAUSE, T0).rollout
    assert (paused.phase, paused.resume_to, paused.failed_from) == (Phase.PAUSED, Phase.BAKING, None)
    resumed = apply_command(paused, Verb.RESUME, T0).rollout
    assert (resumed.phase, resumed.resume_to, resumed.failed_from) == (Phase.BAKING, None, None)
    # Paused, aborted with a rollback, then the rollback is stuck: Failed from RollingBack, and
    # retry rolls back again (it does not return to where the rollout was paused).
    rolling = apply_command(paused, Verb.ABORT, T0, rollback=True).rollout
    stuck = decide(rolling, fleet(I("0"), I("1")), POLICY, T0 + timedelta(days=1)).rollout
    assert (stuck.phase, stuck.failed_from, stuck.resume_to) == (Phase.FAILED, Phase.ROLLING_BACK, None)
    assert apply_command(stuck, Verb.RETRY, T0 + timedelta(days=1)).rollout.phase is Phase.ROLLING_BACK
