"""The canary judge in whole rollouts on the fakes: a clear failure rolls back before the bake ends, a
Marginal verdict pauses for a human (``promote`` goes on, ``abort`` rolls back), a clean canary with
traffic passes early, and an instance already unhealthy before its batch does not count against the
release."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from rollout.machine import Verb
from rollout.model import EventKind, Phase
from rollout.policy import RolloutPolicy
from rollout.ports import TransientError
from rollout.releases import ExtensionDefaults
from rollout.service import RolloutService
from rollout.signals import InstanceSignals
from rollout.views import rollout_detail
from tests.fakes import BASE_URL, FakeClock, FakeNotifier, FakeProber, FakeScaleSet, FakeStore
from tests.service.test_rollouts import TARGET, World, script

BAKE = 300
POLICY = RolloutPolicy(bake_seconds=BAKE, failure_threshold=2)


@dataclass
class FakeSignals:
    """A ``SignalSource`` like the Azure Monitor adapters: per instance and window, the requests it served
    (``per_second`` a second), the server errors among them (the share its release gives, carried over
    from window to window so the counts are exact over the bake) and one latency per request."""

    scale_set: FakeScaleSet
    error_rate: dict[str, float] = field(default_factory=dict)  # release -> share of requests failing
    latency_ms: dict[str, float] = field(default_factory=dict)  # release -> typical latency
    per_second: float = 1.0
    unavailable: bool = False
    windows: list[tuple[datetime, datetime]] = field(default_factory=list)
    _owed: dict[str, float] = field(default_factory=dict)

    def read(self, instance_ids: Sequence[str], start: datetime, end: datetime) -> dict[str, InstanceSignals]:
        if self.unavailable:
            raise TransientError("Azure Monitor: 503 (fake)")
        self.windows.append((start, end))
        out = {}
        releases = self.scale_set.releases()
        for iid in instance_ids:
            release = releases[iid]
            requests = int((end - start).total_seconds() * self.per_second)
            owed = self._owed.get(iid, 0.0) + requests * self.error_rate.get(release, 0.0)
            errors = min(requests, int(owed))
            self._owed[iid] = owed - errors
            base = self.latency_ms.get(release, 20.0)
            spread = (0.9, 1.0, 1.1, 0.95, 1.05)
            latencies = tuple(base * spread[i % 5] for i in range(requests - errors))
            out[iid] = InstanceSignals(iid, start, end, requests, errors, latencies, sources=("fake",))
        return out


def make_world(signals: dict[str, object] | None = None, size: int = 5, policy: RolloutPolicy = POLICY) -> World:
    ss = FakeScaleSet(size=size)
    store, clock, notifier = FakeStore(), FakeClock(), FakeNotifier()
    source = None if signals is None else FakeSignals(ss, **signals)  # type: ignore[arg-type]
    service = RolloutService(
        target_key=TARGET,
        compute=ss,
        prober=FakeProber(ss),
        store=store,
        notifier=notifier,
        clock=clock,
        policy=policy,
        extension=ExtensionDefaults(),
        release_container_url=BASE_URL,
        signals=source,
    )
    return World(ss, store, clock, notifier, service)


V1 = "install_nginx.v1.sh"


def _judged(world: World, rid: str) -> list[str]:
    return [e.message for e in world.store.list_events(TARGET, rid) if e.kind is EventKind.JUDGED]


def _baking_started(world: World, rid: str) -> datetime:
    world.tick_until(Phase.BAKING, rollout_id=rid)
    rollout = world.store.get_rollout(TARGET, rid)
    assert rollout is not None
    return rollout.phase_since


def test_a_canary_serving_errors_is_rolled_back_at_the_first_look_not_after_the_bake() -> None:
    # The probe sees a healthy page (the release is not "broken" to it); the traffic says 30% errors.
    world = make_world({"error_rate": {V1: 0.3}, "per_second": 2.0})
    rid = world.service.start_release(script(1)).rollout_id or ""
    started = _baking_started(world, rid)
    world.tick_until(Phase.ROLLING_BACK, rollout_id=rid)
    assert (world.clock.now() - started).total_seconds() <= 30  # the first look, not 300 s
    rollout = world.store.get_rollout(TARGET, rid)
    assert rollout is not None and rollout.judge is not None
    assert rollout.rollback_reason.startswith("canary judged worse than the baseline: Fail: error rate")
    [message] = _judged(world, rid)
    assert "canary judged Fail" in message and "errors 18/61 vs 0/61" in message
    events = rollout_detail(rollout, world.store.list_events(TARGET, rid))["events"]
    [judged] = [e for e in events if e["kind"] == "Judged"]
    assert judged["judgement"]["errorRate"]["pFail"] < judged["judgement"]["failBoundary"]
    assert world.tick_until(Phase.ROLLED_BACK, rollout_id=rid) is Phase.ROLLED_BACK
    assert world.scale_set.calls_of("upgrade_instances")[0] == ("0",)  # nothing past the canary was touched
    assert {c for c in world.scale_set.calls_of("upgrade_instances")} == {("0",)}


def test_a_canary_twice_as_slow_is_rolled_back_during_the_bake() -> None:
    world = make_world({"latency_ms": {V1: 200.0}, "per_second": 1.0})
    rid = world.service.start_release(script(1)).rollout_id or ""
    started = _baking_started(world, rid)
    world.tick_until(Phase.ROLLING_BACK, rollout_id=rid)
    assert (world.clock.now() - started).total_seconds() < BAKE
    rollout = world.store.get_rollout(TARGET, rid)
    assert rollout is not None and "latency median" in rollout.rollback_reason


def _marginal(world: World) -> str:
    rid = world.service.start_release(script(1)).rollout_id or ""
    world.tick_until(Phase.PAUSED, Phase.PROMOTING, Phase.ROLLING_BACK, rollout_id=rid)
    assert world.phase(rid) is Phase.PAUSED
    return rid


def test_a_marginal_canary_pauses_with_the_evidence_and_promote_goes_on() -> None:
    # 3% errors against none, 30 requests a tick: leaning worse at the end of the bake, never conclusive.
    world = make_world({"error_rate": {V1: 0.03}})
    rid = _marginal(world)
    rollout = world.store.get_rollout(TARGET, rid)
    assert rollout is not None and rollout.judge is not None
    assert rollout.reason.startswith("canary judged Marginal, a human decides (promote or abort): Marginal:")
    detail = rollout_detail(rollout, world.store.list_events(TARGET, rid))
    assert detail["pausedFrom"] == "Baking" and detail["judgement"]["verdict"] == "Marginal"
    assert detail["judgement"]["canary"]["errors"] > 0 and detail["judgement"]["baseline"]["errors"] == 0
    assert detail["judgement"]["baselineInstances"] == ["1"] and detail["judgement"]["canaryInstances"] == ["0"]
    assert 0 < detail["judgement"]["figures"]["errorRate"]["pFail"] < POLICY.judge_marginal_p
    assert "canary judged Marginal" in world.notifier.messages[-1]
    # Paused: ticks do nothing until a human answers.
    for _ in range(5):
        world.clock.advance(30)
        world.service.tick()
    assert world.phase(rid) is Phase.PAUSED and world.scale_set.calls_of("upgrade_instances") == [("0",)]
    world.service.command(rid, Verb.PROMOTE, actor="alice", reason="known flaky dependency")
    assert world.phase(rid) in (Phase.BAKING, Phase.PROMOTING)  # the verb's own tick may promote at once
    assert world.tick_until(Phase.SUCCEEDED, rollout_id=rid) is Phase.SUCCEEDED
    kinds = [e.kind for e in world.store.list_events(TARGET, rid)]
    assert EventKind.PROMOTED in kinds


def test_a_marginal_canary_is_rolled_back_by_abort() -> None:
    world = make_world({"error_rate": {V1: 0.03}})
    rid = _marginal(world)
    world.service.command(rid, Verb.ABORT, actor="bob")
    rollout = world.store.get_rollout(TARGET, rid)
    assert rollout is not None and rollout.phase is Phase.ROLLING_BACK
    assert rollout.rollback_reason == "aborted by bob after a Marginal verdict"
    assert world.tick_until(Phase.ROLLED_BACK, rollout_id=rid) is Phase.ROLLED_BACK


def test_resume_after_a_marginal_verdict_bakes_again_and_judges_afresh() -> None:
    world = make_world({"error_rate": {V1: 0.03}})
    rid = _marginal(world)
    resumed = world.clock.now()
    world.service.command(rid, Verb.RESUME)  # the release keeps its errors: a second bake leans the same way
    rollout = world.store.get_rollout(TARGET, rid)
    assert rollout is not None and rollout.phase is Phase.BAKING
    assert rollout.judge is None or (rollout.judge.started_at or resumed) >= resumed
    world.tick_until(Phase.PAUSED, Phase.PROMOTING, Phase.ROLLING_BACK, rollout_id=rid)
    assert len(_judged(world, rid)) == 2


def test_a_clean_canary_with_traffic_passes_before_the_bake_ends() -> None:
    world = make_world({"per_second": 50.0}, policy=RolloutPolicy(bake_seconds=900, failure_threshold=2))
    rid = world.service.start_release(script(1)).rollout_id or ""
    started = _baking_started(world, rid)
    world.tick_until(Phase.PROMOTING, rollout_id=rid)
    assert (world.clock.now() - started).total_seconds() < 900
    changes = [e.message for e in world.store.list_events(TARGET, rid) if e.kind is EventKind.PHASE_CHANGED]
    assert any(m.startswith("Baking -> Promoting: canary judged Pass") and "into the bake" in m for m in changes)
    assert world.tick_until(Phase.SUCCEEDED, rollout_id=rid) is Phase.SUCCEEDED


def test_the_probes_alone_still_bake_the_full_time_and_record_the_verdict() -> None:
    world = make_world(None)
    rid = world.service.start_release(script(1)).rollout_id or ""
    started = _baking_started(world, rid)
    world.tick_until(Phase.PROMOTING, rollout_id=rid)
    assert (world.clock.now() - started).total_seconds() >= BAKE
    rollout = world.store.get_rollout(TARGET, rid)
    assert rollout is not None and rollout.judge is not None
    assert rollout.judge.canary.requests == rollout.judge.baseline.requests > 0
    assert rollout.judge.verdict.value == "Pass" and rollout.judge.figures["why"].startswith("no evidence")
    assert _judged(world, rid) == []  # the ordinary way on: figures on the rollout, no event of their own


def test_signals_that_cannot_be_read_leave_the_judge_with_the_probes() -> None:
    world = make_world({"unavailable": True})
    rid = world.service.start_release(script(1)).rollout_id or ""
    assert world.tick_until(Phase.SUCCEEDED, rollout_id=rid) is Phase.SUCCEEDED
    rollout = world.store.get_rollout(TARGET, rid)
    assert rollout is not None and rollout.judge is not None and rollout.judge.canary.requests < 20


def test_the_signal_windows_follow_each_other_without_overlap() -> None:
    world = make_world({"per_second": 1.0})
    rid = world.service.start_release(script(1)).rollout_id or ""
    world.tick_until(Phase.PROMOTING, rollout_id=rid)
    source = world.service.signals
    assert isinstance(source, FakeSignals) and len(source.windows) >= 2
    for (_, end), (start, _) in zip(source.windows, source.windows[1:], strict=False):
        assert start == end


def test_a_customscript_failure_is_still_an_immediate_fail() -> None:
    world = make_world({"per_second": 1.0})
    world.scale_set.failing_releases.add(V1)
    rid = world.service.start_release(script(1)).rollout_id or ""
    assert world.tick_until(Phase.ROLLING_BACK, rollout_id=rid) is Phase.ROLLING_BACK
    rollout = world.store.get_rollout(TARGET, rid)
    assert rollout is not None and rollout.rollback_reason.startswith("canary failed: instance 0: extension failed")
    assert rollout.judge is None


# --- fleets are not static ---------------------------------------------------------------------------------


def test_an_instance_unhealthy_before_its_batch_and_after_does_not_count_against_the_release() -> None:
    world = make_world(None, policy=RolloutPolicy(bake_seconds=60, failure_threshold=2, max_unavailable=2))
    world.scale_set.instances["3"].forced_unhealthy = True  # down before the rollout reaches it, and stays so
    rid = world.service.start_release(script(1)).rollout_id or ""
    assert world.tick_until(Phase.SUCCEEDED, Phase.ROLLED_BACK, rollout_id=rid) is Phase.SUCCEEDED
    rollout = world.store.get_rollout(TARGET, rid)
    assert rollout is not None and rollout.unhealthy_before == ("3",)
    assert "unhealthy before their batch" in rollout.reason
    assert world.scale_set.releases()["3"] == V1
    assert rollout_detail(rollout, [])["unhealthyBefore"] == ["3"]


def test_an_instance_healthy_before_its_upgrade_and_not_after_counts() -> None:
    world = make_world(None, policy=RolloutPolicy(bake_seconds=60, failure_threshold=2))
    rid = world.service.start_release(script(1)).rollout_id or ""
    world.tick_until(Phase.PROMOTING, rollout_id=rid)
    for _ in range(20):  # until instance 1's batch is upgraded
        if world.scale_set.releases()["1"] == V1:
            break
        world.clock.advance(30)
        world.service.tick()
    world.scale_set.instances["1"].forced_unhealthy = True
    assert world.tick_until(Phase.SUCCEEDED, Phase.ROLLED_BACK, rollout_id=rid) is Phase.ROLLED_BACK
    rollout = world.store.get_rollout(TARGET, rid)
    assert rollout is not None and rollout.unhealthy_before == ()
    assert "instance 1" in rollout.rollback_reason


def test_an_instance_unhealthy_before_that_recovers_on_the_release_counts_from_then_on() -> None:
    world = make_world(None, policy=RolloutPolicy(bake_seconds=60, failure_threshold=2, max_unavailable=2))
    world.scale_set.instances["3"].forced_unhealthy = True
    rid = world.service.start_release(script(1)).rollout_id or ""
    for _ in range(40):
        rollout = world.store.get_rollout(TARGET, rid)
        assert rollout is not None
        if "3" in rollout.unhealthy_before and world.scale_set.releases()["3"] == V1:
            break
        world.clock.advance(30)
        world.service.tick()
    world.scale_set.instances["3"].forced_unhealthy = False
    world.clock.advance(30)
    world.service.tick()
    rollout = world.store.get_rollout(TARGET, rid)
    assert rollout is not None and rollout.unhealthy_before == () and rollout.phase is Phase.PROMOTING
    world.scale_set.instances["3"].forced_unhealthy = True  # healthy on the release once: counted now
    assert world.tick_until(Phase.SUCCEEDED, Phase.ROLLED_BACK, rollout_id=rid) is Phase.ROLLED_BACK
