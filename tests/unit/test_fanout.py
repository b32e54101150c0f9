"""The fan-out's pure parts: the tick message, which targets have work, the spread of the reads, and
``Fanout.fan_out`` on the in-memory store (tests/fakes.py) with a recording sender."""

from __future__ import annotations

import base64
import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from rollout.fanout import (
    MAX_LOOK_CHARS,
    MAX_MESSAGE_BYTES,
    Fanout,
    QueuedLooks,
    ReadBudget,
    TickMessage,
    TickMessageError,
    decode_tick,
    has_work,
    spread,
    targets_with_work,
)
from rollout.model import Phase
from rollout.policy import RolloutPolicy
from rollout.ports import PortError, TransientError
from rollout.settings import ProbeSettings
from rollout.targets import Group, Target, TargetRef, TargetsConfig, Wave, single_target_config
from tests.fakes import FakeStore
from tests.service.test_rollouts import TARGET, make_world, script

NOW = datetime(2026, 11, 29, 22, 0, tzinfo=UTC)


def config_of(*names: str) -> TargetsConfig:
    targets = tuple(Target(TargetRef("sub", "rg", name)) for name in names)
    return TargetsConfig(groups=(Group("default", tuple(Wave((t,)) for t in targets)),))


# ---- the message ---------------------------------------------------------------------------------


def test_a_message_round_trips_and_is_small_json() -> None:
    message = TickMessage("rg:vmss", NOW, NOW + timedelta(seconds=7))
    text = message.encode()
    assert json.loads(text) == {
        "v": 1,
        "target": "rg:vmss",
        "enqueuedAt": "2026-11-29T22:00:00+00:00",
        "notBefore": "2026-11-29T22:00:07+00:00",
    }
    assert decode_tick(text) == message
    assert decode_tick(text.encode()) == message


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe\x00garbage", "not JSON"),
        (base64.b64encode(b'{"v":1}'), "not JSON"),  # still base64: the host decodes it, not the app
        (b"[1, 2]", "JSON object"),
        (b'{"v": 2, "target": "rg:x", "enqueuedAt": "2026-11-29T22:00:00+00:00", "notBefore": "x"}', "version"),
        (b'{"v": 1, "enqueuedAt": "2026-11-29T22:00:00+00:00", "notBefore": "2026-11-29T22:00:00+00:00"}', "target"),
        (b'{"v": 1, "target": "", "enqueuedAt": "2026-11-29T22:00:00+00:00", "notBefore": "x"}', "target"),
        (b'{"v": 1, "target": 5, "enqueuedAt": "2026-11-29T22:00:00+00:00", "notBefore": "x"}', "target"),
        (b'{"v": 1, "target": "rg:x", "enqueuedAt": "yesterday", "notBefore": "x"}', "enqueuedAt"),
        (b'{"v": 1, "target": "rg:x", "enqueuedAt": "2026-11-29T22:00:00", "notBefore": "x"}', "UTC offset"),
        (b'{"v": 1, "target": "rg:x", "enqueuedAt": "2026-11-29T22:00:00Z", "notBefore": 3}', "notBefore"),
        (
            b'{"v": 1, "target": "rg:x", "enqueuedAt": "2026-11-29T22:00:00Z", "notBefore": "2026-11-29T22:00:00Z",'
            b' "extra": 1}',
            "unknown field",
        ),
        (b"[" * 100_000, "at most"),
        (b'{"v": 1, "target": "' + b"a" * 300 + b'"}', "target"),
        ("[" * 1020 + "]" * 1020, "not JSON"),  # nested too deep for the parser (RecursionError)
    ],
)
def test_anything_else_is_refused_with_the_reason(body: bytes | str, says: str) -> None:
    with pytest.raises(TickMessageError, match=says):
        decode_tick(body)


def test_the_size_bound_holds_for_the_longest_key() -> None:
    key = "r" * 90 + ":" + "n" * 64
    assert len(TickMessage(key, NOW, NOW).encode().encode()) < MAX_MESSAGE_BYTES
    longest = TickMessage(key, NOW, NOW, look="s" * MAX_LOOK_CHARS, share=100_000)
    assert len(longest.encode().encode()) < MAX_MESSAGE_BYTES and decode_tick(longest.encode()) == longest


def test_a_look_carries_its_stamp_and_share_and_a_timer_message_is_as_before() -> None:
    look = TickMessage("rg:vmss", NOW, NOW + timedelta(seconds=5), look="rid|W/\"datetime'2026'\"", share=3)
    data = json.loads(look.encode())
    assert data["look"] == "rid|W/\"datetime'2026'\"" and data["share"] == 3
    assert decode_tick(look.encode()) == look
    assert set(json.loads(TickMessage("rg:vmss", NOW, NOW).encode())) == {"v", "target", "enqueuedAt", "notBefore"}


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ('"look": ""', "look"),
        ('"look": 5', "look"),
        ('"look": "' + "x" * (MAX_LOOK_CHARS + 1) + '"', "look"),
        ('"share": 0', "share"),
        ('"share": true', "share"),
        ('"share": 2.5', "share"),
        ('"share": 1000001', "share"),
    ],
)
def test_a_bad_look_or_share_is_refused_with_the_reason(extra: str, says: str) -> None:
    body = (
        '{"v":1,"target":"rg:x","enqueuedAt":"2026-11-29T22:00:00Z","notBefore":"2026-11-29T22:00:00Z",' + extra + "}"
    )
    with pytest.raises(TickMessageError, match=says):
        decode_tick(body)


def test_queued_looks_send_a_delayed_tick_and_a_bad_queue_setting_is_a_port_error() -> None:
    sender = RecordingSender()
    looks = QueuedLooks(lambda: sender, lambda: NOW)
    looks.ask("rg:vmss", "rid|etag", 2, 7)
    (message,) = sender.messages
    assert message == TickMessage("rg:vmss", NOW, NOW + timedelta(seconds=7), look="rid|etag", share=2)
    assert sender.sent == [("rg:vmss", 7)]

    def broken() -> RecordingSender:
        raise ValueError("TICK_QUEUE: not a queue name")

    with pytest.raises(PortError, match="TICK_QUEUE"):
        QueuedLooks(broken, lambda: NOW).ask("rg:vmss", "rid|etag", 1, 5)


# ---- which targets have work ---------------------------------------------------------------------


def test_a_target_without_rows_or_with_only_ended_rollouts_has_no_work() -> None:
    world = make_world()
    assert not has_work(world.store, TARGET)
    v1 = world.service.start_release(script(1)).rollout_id or ""
    assert has_work(world.store, TARGET)  # active: it holds the scale set
    world.tick_until(Phase.SUCCEEDED, rollout_id=v1)
    assert not has_work(world.store, TARGET)


def test_a_queued_rollout_is_work_even_when_nothing_holds_the_scale_set() -> None:
    world = make_world()
    v1 = world.service.start_release(script(1)).rollout_id or ""
    v2 = world.service.start_release(script(2)).rollout_id or ""
    # v1 ended and was handed over; v2 waits (as after a host died between the two writes).
    store = world.store
    store.rollouts[(TARGET, v1)] = store.rollouts[(TARGET, v1)].evolve(phase=Phase.SUCCEEDED)
    target = store.targets[TARGET]
    store.targets[TARGET] = dataclasses.replace(target, active_rollout_id=None)
    assert store.rollouts[(TARGET, v2)].phase is Phase.QUEUED
    assert has_work(store, TARGET)
    # The tick the message causes starts it.
    world.service.tick()
    assert world.phase(v2) is Phase.CANARY


class CountingStore(FakeStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def get_target(self, key: str):  # type: ignore[no-untyped-def]
        self.reads.append(f"target {key}")
        return super().get_target(key)

    def list_rollouts(self, target: str):  # type: ignore[no-untyped-def]
        self.reads.append(f"rollouts {target}")
        return super().list_rollouts(target)


def test_a_held_target_costs_one_point_read() -> None:
    world = make_world()
    world.service.start_release(script(1))
    store = CountingStore()
    store.targets, store.rollouts = world.store.targets, world.store.rollouts
    assert has_work(store, TARGET)
    assert store.reads == [f"target {TARGET}"]


def test_the_selection_keeps_configuration_order_and_reports_unreadable_targets() -> None:
    config = config_of("a", "b", "c", "d")
    world = make_world()
    store = world.store
    for key in ("rg:d", "rg:b"):
        store.save_target(dataclasses.replace(store.get_target(key) or _record(key), active_rollout_id="r1"))

    class Flaky(FakeStore):
        def get_target(self, key: str):  # type: ignore[no-untyped-def]
            if key == "rg:c":
                raise TransientError("read target rg:c: HTTP 503")
            return store.get_target(key)

        def list_rollouts(self, target: str):  # type: ignore[no-untyped-def]
            return store.list_rollouts(target)

    selection = targets_with_work(config, Flaky())
    assert [t.key for t in selection.with_work] == ["rg:b", "rg:d"]
    assert [(t.key, why) for t, why in selection.unreadable] == [("rg:c", "read target rg:c: HTTP 503")]


def _record(key: str):  # type: ignore[no-untyped-def]
    from rollout.model import TargetRecord

    return TargetRecord(key=key)


# ---- the spread ----------------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [ReadBudget(), ReadBudget(250, 25, 3), ReadBudget(0, 1.5, 4), ReadBudget(10, 0.1)])
def test_the_spread_never_draws_more_than_the_bucket_holds_and_wastes_no_time(budget: ReadBudget) -> None:
    delays = spread(300, budget)
    assert delays == sorted(delays)
    for i, delay in enumerate(delays):
        reads = (i + 1) * budget.reads_per_tick
        assert reads <= budget.burst + budget.rate * delay  # the reads of ticks 0..i fit by then
        if delay > 0:  # and a second earlier they would not
            assert reads > budget.burst + budget.rate * (delay - 1)


def test_the_burst_goes_at_once_and_200_targets_fit_in_one_tick_interval_by_default() -> None:
    delays = spread(200, ReadBudget())
    assert delays[: 100 // 3] == [0] * (100 // 3) and delays[100 // 3] > 0
    assert delays[-1] <= 30  # the default ROLLOUT_TICK_SCHEDULE: every 30 seconds


# ---- fan_out -------------------------------------------------------------------------------------


class RecordingSender:
    def __init__(self, fail_for: set[str] | None = None) -> None:
        self.sent: list[tuple[str, int]] = []
        self.messages: list[TickMessage] = []
        self.fail_for = fail_for or set()

    def send(self, message: TickMessage, delay_seconds: int) -> None:
        if message.target in self.fail_for:
            raise TransientError("send: HTTP 500")
        decoded = decode_tick(message.encode())
        assert decoded.not_before == decoded.enqueued_at + timedelta(seconds=delay_seconds)
        self.sent.append((message.target, delay_seconds))
        self.messages.append(decoded)


def test_fan_out_sends_one_message_per_target_with_work_spread_and_reports_the_rest() -> None:
    names = [f"vmss{i:03d}" for i in range(60)]
    store = FakeStore()
    for name in names[:50]:
        store.save_target(_record(f"rg:{name}"))
        store.save_target(dataclasses.replace(store.get_target(f"rg:{name}") or _record(""), active_rollout_id="r"))
    sender = RecordingSender(fail_for={"rg:vmss007"})
    fanout = Fanout(config_of(*names), store, sender, lambda: NOW, ReadBudget(burst=30, rate=10, reads_per_tick=3))
    result = fanout.fan_out()
    assert [k for k, _ in sender.sent] == [f"rg:{n}" for n in names[:50] if n != "vmss007"]
    assert result.enqueued == tuple(sender.sent)
    assert result.failed == (("rg:vmss007", "send: HTTP 500"),)
    assert result.idle == 10
    assert sender.sent[0][1] == 0 and sender.sent[-1][1] == spread(50, fanout.budget)[-1] > 0
    assert "49 target(s) enqueued" in result.summary() and "1 not sent (rg:vmss007)" in result.summary()
    # Each message says how many targets have work: their earlier looks are spaced by that much more.
    assert {m.share for m in sender.messages} == {50} and all(m.look is None for m in sender.messages)


def test_the_single_target_of_the_vmss_settings_is_found_by_its_key() -> None:
    config = single_target_config(TargetRef("sub", "Canary-RG", "Canary-VMSS"), RolloutPolicy(), ProbeSettings())
    fanout = Fanout(config, FakeStore(), RecordingSender(), lambda: NOW)
    target = fanout.target("canary-rg:canary-vmss")
    assert target is not None and target.ref.name == "Canary-VMSS"
    assert fanout.target("other:vmss") is None


# ---- its settings --------------------------------------------------------------------------------


def test_fanout_settings_name_every_problem_at_once() -> None:
    from rollout.settings import SettingsError, load_fanout_settings

    with pytest.raises(SettingsError) as caught:
        load_fanout_settings({"TICK_QUEUE": "Bad_Name", "TICK_READ_BURST": "-1", "TICK_READ_RATE": "0"})
    text = str(caught.value)
    for name in ("TickQueue", "TICK_QUEUE='Bad_Name'", "TICK_READ_BURST='-1'", "TICK_READ_RATE='0'"):
        assert name in text
    with pytest.raises(SettingsError, match="TICK_QUEUE"):  # "<name>-poison" must be a queue name too
        load_fanout_settings({"TickQueue": "UseDevelopmentStorage=true", "TICK_QUEUE": "q" * 60})


@pytest.mark.parametrize("burst", ["²", "9" * 5000])
def test_a_read_burst_of_digits_int_cannot_take_is_a_settings_error(burst: str) -> None:
    # Found by tests/service/test_bad_input_properties.py: str.isdigit() is true for "²" and for 5,000
    # digits, where int() raises ValueError: the timer crashed instead of naming the setting.
    from rollout.settings import SettingsError, load_fanout_settings

    with pytest.raises(SettingsError, match="TICK_READ_BURST=") as caught:
        load_fanout_settings({"TickQueue": "UseDevelopmentStorage=true", "TICK_READ_BURST": burst})
    assert len(str(caught.value)) < 400


def test_fanout_settings_take_either_connection_form() -> None:
    from rollout.settings import load_fanout_settings

    by_uri = load_fanout_settings({"TickQueue__queueServiceUri": "https://acct.queue.core.windows.net/"})
    assert by_uri.queue.service_uri == "https://acct.queue.core.windows.net" and by_uri.queue_name == "rollout-ticks"
    by_string = load_fanout_settings(
        {
            "TickQueue": "UseDevelopmentStorage=true",
            "TICK_QUEUE": "ticks-1",
            "TICK_READ_BURST": "0",
            "TICK_READ_RATE": "2.5",
        }
    )
    assert (by_string.queue.connection_string, by_string.queue_name) == ("UseDevelopmentStorage=true", "ticks-1")
    assert (by_string.read_burst, by_string.read_rate) == (0, 2.5)
