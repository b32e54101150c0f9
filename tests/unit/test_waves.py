"""The wave decider as tables of cases: (group release, what each target shows, now) in; (record, actions) out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from rollout.machine import CommandError, Verb
from rollout.model import EventKind, ModelSpec, Phase, Release, ReleaseKind, Rollout, TargetRecord
from rollout.releases import ROLLOUT_ID_RE
from rollout.targets import Group, OnFailure, Target, TargetRef, Wave
from rollout.waves import (
    START_GRACE_SECONDS,
    GroupPhase,
    GroupRelease,
    StartRevert,
    StartTarget,
    SteerTarget,
    TargetState,
    apply_group_command,
    apply_target_command,
    decide_group,
    group_partition,
    new_group_release,
    revert_rollout_id,
)

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def release(version: int) -> Release:
    name = f"install_nginx.v{version}.sh"
    return Release(
        ReleaseKind.SCRIPT, "install_nginx", version, name, f"https://a/init/web/{name}", f"{version:02d}" * 32
    )


V1, V2 = release(1), release(2)
GR_ID = "install_nginx-v2-0202020202"


def target(name: str) -> Target:
    return Target(TargetRef("sub", "rg", name))


def group(on_failure: OnFailure = OnFailure.HALT, bake: int = 600) -> Group:
    """3 waves over 5 targets: a canary scale set, then two, then two."""
    waves = (("canary",), ("west", "east"), ("north", "south"))
    return Group(
        name="web",
        waves=tuple(Wave(tuple(target(n) for n in w)) for w in waves),
        wave_bake_seconds=bake,
        on_failure=on_failure,
    )


def running(on_failure: OnFailure = OnFailure.HALT, bake: int = 600, **changes: object) -> GroupRelease:
    record = new_group_release(GR_ID, group(on_failure, bake), V2, T0)
    return record.evolve(**{"phase": GroupPhase.RUNNING, **changes})


def rollout(key: str, phase: Phase, rid: str = GR_ID, rel: Release = V2, since: datetime = T0) -> Rollout:
    return Rollout(
        id=rid,
        target=key,
        release=rel,
        phase=phase,
        desired=ModelSpec(),
        baseline=None,
        created_at=T0,
        updated_at=since,
        phase_since=since,
        last_progress_at=since,
        reason=f"{phase.value} there",
    )


def stable(key: str, rel: Release | None = V1) -> TargetRecord:
    return TargetRecord(key=key, stable_version=rel.version if rel else None, stable_release=rel)


def states(**phases: Phase) -> dict[str, TargetState]:
    """``canary=Phase.SUCCEEDED`` -> the release's rollout on rg:canary in that phase (and v1 stable there)."""
    return {
        f"rg:{name}": TargetState(record=stable(f"rg:{name}"), rollouts=(rollout(f"rg:{name}", phase),))
        for name, phase in phases.items()
    }


def started(record: GroupRelease, *names: str) -> GroupRelease:
    """``record`` with the release started on ``names`` (v1 was stable there)."""
    keys = {f"rg:{n}" for n in names}
    targets = tuple(replace(t, rollout_id=GR_ID, previous=V1) if t.key in keys else t for t in record.targets)
    return record.evolve(targets=targets)


def kinds(decision_events: tuple[object, ...]) -> list[EventKind]:
    return [e.kind for e in decision_events]  # type: ignore[attr-defined]


# --- going forward -----------------------------------------------------------------------------


def test_a_new_release_starts_every_target_of_wave_1_and_records_what_they_had() -> None:
    record = running()
    decision = decide_group(record, {"rg:canary": TargetState(record=stable("rg:canary"))}, T0)
    assert decision.actions == (StartTarget("rg:canary"),)
    entry = decision.record.entry("rg:canary")
    assert entry is not None and entry.rollout_id == GR_ID and entry.previous == V1
    assert kinds(decision.events) == [EventKind.TARGET_STARTED]
    event = decision.events[0]
    assert event.target == group_partition("web") and event.data["target"] == "rg:canary"
    assert decision.record.entry("rg:west") == record.entry("rg:west")  # later waves untouched


@pytest.mark.parametrize(
    ("stable_release", "previous"),
    [(None, None), (V1, V1), (V2, None), (release(3), None)],
    ids=["nothing-stable", "older-stable", "same-version", "newer-stable"],
)
def test_previous_is_only_an_older_stable_release(stable_release: Release | None, previous: Release | None) -> None:
    decision = decide_group(running(), {"rg:canary": TargetState(record=stable("rg:canary", stable_release))}, T0)
    entry = decision.record.entry("rg:canary")
    assert entry is not None and entry.previous == previous


@pytest.mark.parametrize(
    ("canary_state", "expected_actions"),
    [
        (None, (StartTarget("rg:canary"),)),  # decided, never received there: sent again
        (Phase.QUEUED, ()),
        (Phase.CANARY, ()),
        (Phase.BAKING, ()),
        (Phase.PROMOTING, ()),
        (Phase.PAUSED, ()),
        (Phase.ROLLING_BACK, ()),
    ],
)
def test_a_started_wave_waits_for_every_target(canary_state: Phase | None, expected_actions: tuple[object]) -> None:
    record = started(running(), "canary")
    seen = states(canary=canary_state) if canary_state else {}
    decision = decide_group(record, seen, T0)
    assert decision.actions == expected_actions
    assert decision.record.phase is GroupPhase.RUNNING
    assert "waiting for rg:canary" in decision.record.reason
    assert decision.events == ()


def test_a_wave_that_succeeded_bakes_from_when_its_last_target_succeeded() -> None:
    record = started(running(), "canary")
    done = T0 + timedelta(seconds=100)
    seen = {"rg:canary": TargetState(rollouts=(rollout("rg:canary", Phase.SUCCEEDED, since=done),))}
    decision = decide_group(record, seen, T0 + timedelta(seconds=130))
    assert decision.record.phase is GroupPhase.WAVE_BAKING
    assert decision.record.wave_completed_at == done
    assert decision.actions == ()
    assert kinds(decision.events) == [EventKind.WAVE_SUCCEEDED, EventKind.PHASE_CHANGED]


@pytest.mark.parametrize(
    ("elapsed", "next_wave_starts"),
    [(0, False), (599, False), (600, True), (3600, True)],
)
def test_the_next_wave_starts_once_the_wave_bake_has_passed(elapsed: int, next_wave_starts: bool) -> None:
    record = started(running(), "canary").evolve(phase=GroupPhase.WAVE_BAKING, wave_completed_at=T0)
    seen = {**states(canary=Phase.SUCCEEDED), "rg:west": TargetState(), "rg:east": TargetState()}
    decision = decide_group(record, seen, T0 + timedelta(seconds=elapsed))
    if next_wave_starts:
        assert decision.record.phase is GroupPhase.RUNNING and decision.record.wave == 1
        assert decision.actions == (StartTarget("rg:west"), StartTarget("rg:east"))
        assert EventKind.WAVE_STARTED in kinds(decision.events)
    else:
        assert decision.record.phase is GroupPhase.WAVE_BAKING and decision.record.wave == 0
        assert decision.actions == ()
        assert "wave bake ends" in decision.record.reason


def test_without_a_wave_bake_the_next_wave_starts_in_the_same_step() -> None:
    record = started(running(bake=0), "canary")
    decision = decide_group(record, states(canary=Phase.SUCCEEDED), T0)
    assert decision.record.wave == 1 and decision.record.phase is GroupPhase.RUNNING
    assert decision.actions == (StartTarget("rg:west"), StartTarget("rg:east"))


def test_a_wave_is_done_only_when_every_target_succeeded() -> None:
    record = started(running(wave=1), "canary", "west", "east")
    decision = decide_group(record, states(canary=Phase.SUCCEEDED, west=Phase.SUCCEEDED, east=Phase.PROMOTING), T0)
    assert decision.record.phase is GroupPhase.RUNNING and "waiting for rg:east" in decision.record.reason


def test_the_release_succeeds_when_the_last_wave_succeeded() -> None:
    record = started(running(wave=2), "canary", "west", "east", "north", "south")
    every = {n: Phase.SUCCEEDED for n in ("canary", "west", "east", "north", "south")}
    decision = decide_group(record, states(**every), T0)
    assert decision.record.phase is GroupPhase.SUCCEEDED
    assert decision.actions == ()
    assert decide_group(decision.record, states(**every), T0).events == ()  # terminal: nothing more


def test_a_queued_group_release_is_not_advanced_by_the_decider() -> None:
    record = new_group_release(GR_ID, group(), V2, T0)
    assert decide_group(record, {}, T0).actions == ()


# --- halting -----------------------------------------------------------------------------------


@pytest.mark.parametrize("failed", [Phase.ROLLED_BACK, Phase.ABORTED, Phase.REJECTED, Phase.FAILED])
def test_a_failed_target_halts_and_aborts_the_rest_of_its_wave_with_rollback(failed: Phase) -> None:
    record = started(running(wave=1), "canary", "west", "east")
    decision = decide_group(record, states(canary=Phase.SUCCEEDED, west=failed, east=Phase.BAKING), T0)
    assert decision.record.phase is GroupPhase.HALTING
    assert decision.record.failed_wave == 1 and decision.record.ending is GroupPhase.HALTED
    aborts = [a for a in decision.actions if isinstance(a, SteerTarget)]
    assert aborts == [SteerTarget("rg:east", GR_ID, Verb.ABORT, True, "group web", aborts[0].reason)]
    assert not any(isinstance(a, StartTarget) for a in decision.actions)
    assert not any(isinstance(a, StartRevert) for a in decision.actions)  # halt: the canary wave keeps v2
    halted = decision.events[0]
    assert halted.kind is EventKind.PHASE_CHANGED and halted.data["target"] == "rg:west"


def test_halting_reverts_the_targets_of_the_failed_wave_that_had_succeeded() -> None:
    record = started(running(wave=1), "canary", "west", "east")
    decision = decide_group(record, states(canary=Phase.SUCCEEDED, west=Phase.SUCCEEDED, east=Phase.ROLLED_BACK), T0)
    reverts = [a for a in decision.actions if isinstance(a, StartRevert)]
    assert [(r.target, r.release) for r in reverts] == [("rg:west", V1)]
    assert reverts[0].rollout_id == revert_rollout_id(GR_ID, "rg:west", V1)
    assert ROLLOUT_ID_RE.fullmatch(reverts[0].rollout_id)
    entry = decision.record.entry("rg:west")
    assert entry is not None and entry.revert_id == reverts[0].rollout_id
    revert_events = [e for e in decision.events if e.kind is EventKind.REVERT_STARTED]
    assert revert_events[0].data["revert"] is True and revert_events[0].data["target"] == "rg:west"


def test_rollback_all_reverts_the_earlier_waves_too() -> None:
    record = started(running(OnFailure.ROLLBACK_ALL, wave=1), "canary", "west", "east")
    decision = decide_group(record, states(canary=Phase.SUCCEEDED, west=Phase.ROLLED_BACK, east=Phase.CANARY), T0)
    assert decision.record.ending is GroupPhase.ROLLED_BACK
    reverts = {a.target for a in decision.actions if isinstance(a, StartRevert)}
    aborts = {a.target for a in decision.actions if isinstance(a, SteerTarget)}
    assert reverts == {"rg:canary"} and aborts == {"rg:east"}


def test_a_target_with_nothing_earlier_keeps_the_release_and_says_so() -> None:
    record = started(running(OnFailure.ROLLBACK_ALL, wave=1), "canary", "west")
    record = record.evolve(
        targets=tuple(replace(t, previous=None) if t.key == "rg:canary" else t for t in record.targets)
    )
    decision = decide_group(record, states(canary=Phase.SUCCEEDED, west=Phase.ROLLED_BACK), T0)
    assert not any(isinstance(a, StartRevert) for a in decision.actions)
    entry = decision.record.entry("rg:canary")
    assert entry is not None and entry.revert_skipped
    assert any("keeps install_nginx v2" in e.message for e in decision.events)


def test_halting_waits_for_rollbacks_and_reverts_then_ends() -> None:
    record = started(running(OnFailure.ROLLBACK_ALL, wave=1), "canary", "west", "east")
    first = decide_group(record, states(canary=Phase.SUCCEEDED, west=Phase.ROLLED_BACK, east=Phase.CANARY), T0)
    revert_id = revert_rollout_id(GR_ID, "rg:canary", V1)

    def seen(east: Phase, revert: Phase | None) -> dict[str, TargetState]:
        out = states(west=Phase.ROLLED_BACK, east=east)
        canary = (rollout("rg:canary", Phase.SUCCEEDED),)
        if revert is not None:
            canary = (rollout("rg:canary", revert, rid=revert_id, rel=V1), *canary)
        out["rg:canary"] = TargetState(record=stable("rg:canary", V2), rollouts=canary)
        return out

    # Nothing landed yet (the host stopped after saving): the abort and the revert are sent again.
    again = decide_group(first.record, seen(Phase.CANARY, None), T0)
    assert {type(a) for a in again.actions} == {SteerTarget, StartRevert}
    assert again.events == ()
    waiting = decide_group(first.record, seen(Phase.ROLLING_BACK, Phase.CANARY), T0)
    assert waiting.actions == () and waiting.record.phase is GroupPhase.HALTING
    assert "rg:canary" in waiting.record.reason and "rg:east" in waiting.record.reason
    done = decide_group(first.record, seen(Phase.ROLLED_BACK, Phase.SUCCEEDED), T0)
    assert done.record.phase is GroupPhase.ROLLED_BACK and done.record.ending is None
    assert "reverted: rg:canary" in done.record.reason


def test_a_halt_waits_a_while_for_a_start_that_may_still_land_and_aborts_it_if_it_does() -> None:
    record = started(running(wave=1), "canary", "west", "east")  # east: decided, nothing landed there yet
    seen = states(canary=Phase.SUCCEEDED, west=Phase.ROLLED_BACK)
    halting = decide_group(record, seen, T0)
    assert halting.record.phase is GroupPhase.HALTING and "rg:east" in halting.record.reason
    late = {**seen, **states(east=Phase.CANARY)}
    aborts = decide_group(halting.record, late, T0 + timedelta(seconds=30)).actions
    assert [(a.target, a.verb) for a in aborts if isinstance(a, SteerTarget)] == [("rg:east", Verb.ABORT)]
    assert decide_group(halting.record, seen, T0 + timedelta(seconds=START_GRACE_SECONDS - 1)).record.phase is (
        GroupPhase.HALTING
    )
    after = decide_group(halting.record, seen, T0 + timedelta(seconds=START_GRACE_SECONDS))
    assert after.record.phase is GroupPhase.HALTED


def test_a_failed_target_waits_for_a_human_but_does_not_keep_the_release_halting() -> None:
    record = started(running(wave=0), "canary")
    decision = decide_group(record, states(canary=Phase.FAILED), T0)
    assert decision.record.phase is GroupPhase.HALTED
    assert decision.actions == ()


def test_a_paused_release_still_halts_on_a_failure() -> None:
    record = started(running(), "canary").evolve(phase=GroupPhase.PAUSED, resume_to=GroupPhase.RUNNING)
    decision = decide_group(record, states(canary=Phase.ROLLED_BACK), T0)
    assert decision.record.phase is GroupPhase.HALTED and decision.record.resume_to is None


def test_a_paused_release_starts_nothing() -> None:
    record = running(phase=GroupPhase.PAUSED, resume_to=GroupPhase.RUNNING)
    decision = decide_group(record, {}, T0)
    assert decision.actions == () and decision.record.phase is GroupPhase.PAUSED


# --- verbs on the whole release --------------------------------------------------------------


def test_abort_of_the_whole_release_aborts_every_active_target_and_no_wave_starts() -> None:
    record = started(running(wave=1), "canary", "west", "east")
    seen = states(canary=Phase.SUCCEEDED, west=Phase.BAKING, east=Phase.PAUSED)
    decision = apply_group_command(record, seen, Verb.ABORT, T0, actor="ana", reason="bad day", rollback=True)
    assert decision.record.phase is GroupPhase.HALTING and decision.record.ending is GroupPhase.ABORTED
    steer = {(a.target, a.verb, a.rollback) for a in decision.actions if isinstance(a, SteerTarget)}
    assert steer == {("rg:west", Verb.ABORT, True), ("rg:east", Verb.ABORT, True)}
    assert not any(isinstance(a, StartRevert) for a in decision.actions)  # an abort reverts nothing
    assert decision.events[0].actor == "ana" and "bad day" in decision.events[0].message
    seen = states(canary=Phase.SUCCEEDED, west=Phase.ROLLED_BACK, east=Phase.ABORTED)
    ended = decide_group(decision.record, seen, T0)
    assert ended.record.phase is GroupPhase.ABORTED


def test_abort_without_rollback_is_passed_on() -> None:
    record = started(running(), "canary")
    decision = apply_group_command(record, states(canary=Phase.CANARY), Verb.ABORT, T0)
    (action,) = decision.actions
    assert isinstance(action, SteerTarget) and action.verb is Verb.ABORT and not action.rollback
    assert action.actor == "operator"  # the operator's abort, passed on in its name


def test_pause_then_resume_of_the_whole_release() -> None:
    record = started(running(wave=1), "canary", "west", "east")
    seen = states(canary=Phase.SUCCEEDED, west=Phase.BAKING, east=Phase.PROMOTING)
    paused = apply_group_command(record, seen, Verb.PAUSE, T0)
    assert paused.record.phase is GroupPhase.PAUSED and paused.record.resume_to is GroupPhase.RUNNING
    assert {(a.target, a.verb) for a in paused.actions} == {("rg:west", Verb.PAUSE), ("rg:east", Verb.PAUSE)}  # type: ignore[union-attr]
    now_paused = states(canary=Phase.SUCCEEDED, west=Phase.PAUSED, east=Phase.PAUSED)
    resumed = apply_group_command(paused.record, now_paused, Verb.RESUME, T0)
    assert resumed.record.phase is GroupPhase.RUNNING and resumed.record.resume_to is None
    assert {(a.target, a.verb) for a in resumed.actions} == {("rg:west", Verb.RESUME), ("rg:east", Verb.RESUME)}  # type: ignore[union-attr]


def test_resume_restarts_the_wave_bake() -> None:
    record = started(running(), "canary").evolve(
        phase=GroupPhase.PAUSED, resume_to=GroupPhase.WAVE_BAKING, wave_completed_at=T0
    )
    later = T0 + timedelta(hours=1)
    resumed = apply_group_command(record, states(canary=Phase.SUCCEEDED), Verb.RESUME, later)
    assert resumed.record.wave_completed_at == later
    assert decide_group(resumed.record, states(canary=Phase.SUCCEEDED), later).record.wave == 0


def test_promote_of_the_whole_release_skips_the_wave_bake_and_promotes_the_targets() -> None:
    record = started(running(), "canary").evolve(phase=GroupPhase.WAVE_BAKING, wave_completed_at=T0)
    decision = apply_group_command(record, states(canary=Phase.SUCCEEDED), Verb.PROMOTE, T0)
    assert decision.record.skip_wave_bake and decision.actions == ()
    nxt = decide_group(decision.record, {**states(canary=Phase.SUCCEEDED)}, T0 + timedelta(seconds=1))
    assert nxt.record.wave == 1 and not nxt.record.skip_wave_bake
    running_wave = started(running(wave=1), "canary", "west", "east")
    seen = states(canary=Phase.SUCCEEDED, west=Phase.BAKING, east=Phase.PROMOTING)
    promoted = apply_group_command(running_wave, seen, Verb.PROMOTE, T0)
    assert [(a.target, a.verb) for a in promoted.actions] == [("rg:west", Verb.PROMOTE)]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("phase", "verb"),
    [
        (GroupPhase.SUCCEEDED, Verb.ABORT),
        (GroupPhase.HALTING, Verb.ABORT),
        (GroupPhase.PAUSED, Verb.PAUSE),
        (GroupPhase.RUNNING, Verb.RESUME),
        (GroupPhase.PAUSED, Verb.PROMOTE),
        (GroupPhase.RUNNING, Verb.RETRY),
    ],
)
def test_verbs_that_do_not_apply_to_the_whole_release_are_refused(phase: GroupPhase, verb: Verb) -> None:
    with pytest.raises(CommandError):
        apply_group_command(running(phase=phase), {}, verb, T0)


def test_abort_of_a_queued_release_ends_it() -> None:
    record = new_group_release(GR_ID, group(), V2, T0)
    assert apply_group_command(record, {}, Verb.ABORT, T0).record.phase is GroupPhase.ABORTED


# --- verbs on one target -----------------------------------------------------------------------


def test_abort_of_one_target_takes_it_out_and_the_wave_goes_on() -> None:
    record = started(running(wave=1, bake=0), "canary", "west", "east")
    seen = states(canary=Phase.SUCCEEDED, west=Phase.SUCCEEDED, east=Phase.BAKING)
    decision = apply_target_command(record, seen, "rg:east", Verb.ABORT, T0, actor="ana", rollback=True)
    assert decision.actions == (SteerTarget("rg:east", GR_ID, Verb.ABORT, rollback=True, actor="ana"),)
    assert decision.record.phase is GroupPhase.RUNNING
    entry = decision.record.entry("rg:east")
    assert entry is not None and entry.excluded
    assert decision.events[0].kind is EventKind.TARGET_STEERED and decision.events[0].data["target"] == "rg:east"
    # Its rollback is no failure of the release: the next wave starts.
    after = decide_group(
        decision.record, states(canary=Phase.SUCCEEDED, west=Phase.SUCCEEDED, east=Phase.ROLLED_BACK), T0
    )
    assert after.record.wave == 2 and {a.target for a in after.actions} == {"rg:north", "rg:south"}  # type: ignore[union-attr]


def test_abort_of_a_target_not_started_yet_means_it_never_is() -> None:
    record = started(running(), "canary")
    decision = apply_target_command(record, {}, "rg:north", Verb.ABORT, T0)
    assert decision.actions == ()
    later = decision.record.evolve(wave=2)
    assert decide_group(later, {}, T0).actions == (StartTarget("rg:south"),)


@pytest.mark.parametrize("verb", [Verb.PAUSE, Verb.RESUME, Verb.PROMOTE, Verb.PROMOTE_FULL, Verb.RETRY])
def test_other_verbs_on_one_target_reach_only_that_target(verb: Verb) -> None:
    record = started(running(wave=1), "canary", "west", "east")
    seen = states(canary=Phase.SUCCEEDED, west=Phase.BAKING, east=Phase.BAKING)
    decision = apply_target_command(record, seen, "rg:west", verb, T0, reason="why")
    assert decision.actions == (SteerTarget("rg:west", GR_ID, verb, actor="operator", reason="why"),)
    assert decision.record == record


def test_verbs_on_targets_outside_the_release_or_not_started_are_refused() -> None:
    record = started(running(), "canary")
    with pytest.raises(LookupError):
        apply_target_command(record, {}, "rg:elsewhere", Verb.ABORT, T0)
    with pytest.raises(CommandError):
        apply_target_command(record, {}, "rg:west", Verb.PAUSE, T0)
    with pytest.raises(CommandError):
        apply_target_command(record, states(canary=Phase.SUCCEEDED), "rg:canary", Verb.ABORT, T0)


# --- the stored record -------------------------------------------------------------------------


def test_a_group_release_round_trips_through_its_table_entity() -> None:
    from rollout.adapters.tables import group_release_from_entity, group_release_to_entity

    record = started(running(OnFailure.ROLLBACK_ALL, wave=1), "canary", "west")
    record = record.evolve(
        phase=GroupPhase.HALTING,
        ending=GroupPhase.ROLLED_BACK,
        failed_wave=1,
        wave_completed_at=T0,
        reason="halting: \u00e9",
        targets=tuple(
            replace(t, revert_id="revert-install_nginx-v1-0123456789", excluded=True, revert_skipped=True)
            if t.key == "rg:canary"
            else t
            for t in record.targets
        ),
    )
    entity = group_release_to_entity(record)
    assert entity["PartitionKey"] == "web" and entity["RowKey"] == GR_ID and entity["phase"] == "Halting"
    assert group_release_from_entity(entity, etag='W/"1"') == record


def test_a_rollout_marked_revert_round_trips_and_others_carry_no_such_property() -> None:
    from rollout.adapters.tables import rollout_from_entity, rollout_to_entity

    plain = rollout("rg:canary", Phase.QUEUED)
    assert "revert" not in rollout_to_entity(plain)
    marked = plain.evolve(revert=True)
    assert rollout_from_entity(rollout_to_entity(marked)).revert is True


def test_a_group_release_of_a_thousand_targets_fits_one_entity() -> None:
    from rollout.adapters.tables import check_entity_size, group_release_from_entity, group_release_to_entity

    big = Group(
        name="fleet",
        waves=tuple(Wave(tuple(target(f"vmss-{w:02d}-{i:03d}") for i in range(250))) for w in range(4)),
        wave_bake_seconds=60,
    )
    record = new_group_release(GR_ID, big, V2, T0).evolve(phase=GroupPhase.RUNNING, wave=3)
    record = record.evolve(
        targets=tuple(
            replace(t, rollout_id=GR_ID, previous=V1 if n % 2 else release(0), revert_id=f"revert-x-v1-{n:010d}")
            for n, t in enumerate(record.targets)
        )
    )
    entity = group_release_to_entity(record)
    assert "targets_1" in entity  # cut into several properties
    assert entity["previous"].count('"sha256"') == 2  # each previous release stored once
    assert check_entity_size(entity, "fleet") < 1024 * 1024
    assert group_release_from_entity(entity) == record
