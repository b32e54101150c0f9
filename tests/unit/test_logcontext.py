"""rollout.logcontext: the structured fields on every log record, per invocation, nested, thread-safe."""

from __future__ import annotations

import logging
import threading

import pytest

from rollout import logcontext
from rollout.logcontext import log_context
from rollout.model import Phase

logcontext.install()


def _record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.getLogger(name).makeRecord(name, logging.INFO, __file__, 1, msg, args, None)


def test_fields_are_attributes_and_a_message_suffix_on_our_own_loggers() -> None:
    with log_context(invocation_id="inv-1", target="rg:vmss"), log_context(rollout_id="r-1", phase=Phase.CANARY):
        own = _record("rollout.service", "tick of %s: %d%% done", "rg:vmss", 50)
        other = _record("azure.core", "a request")
    assert (own.invocation_id, own.rollout_id, own.target, own.phase) == ("inv-1", "r-1", "rg:vmss", "Canary")  # type: ignore[attr-defined]
    assert (
        own.getMessage() == "tick of rg:vmss: 50% done [invocation_id=inv-1 rollout_id=r-1 target=rg:vmss phase=Canary]"
    )
    assert other.rollout_id == "r-1" and other.getMessage() == "a request"  # type: ignore[attr-defined]


def test_outside_a_context_nothing_is_added_and_the_fields_are_empty() -> None:
    record = _record("function_app", "hello %s", "world")
    assert record.getMessage() == "hello world"
    assert (record.invocation_id, record.rollout_id, record.target, record.phase) == ("", "", "", "")  # type: ignore[attr-defined]


def test_contexts_nest_and_restore() -> None:
    with log_context(invocation_id="a", rollout_id="r1"):
        with log_context(rollout_id="r2", phase=None):
            assert logcontext.current() == {"invocation_id": "a", "rollout_id": "r2"}
        assert logcontext.current() == {"invocation_id": "a", "rollout_id": "r1"}
    assert logcontext.current() == {}
    with pytest.raises(ValueError, match="unknown log field"), log_context(url="https://example.invalid/secret"):
        pass


def test_values_cannot_break_the_suffix_or_the_line() -> None:
    with log_context(rollout_id="a] [target=forged\nnext line"):
        record = _record("rollout", "x")
    assert "\n" not in record.getMessage() and "[target=forged" not in record.getMessage()
    assert record.getMessage().startswith("x [rollout_id=a)")


def test_each_thread_sees_its_own_invocation() -> None:
    seen: dict[str, str] = {}
    barrier = threading.Barrier(2)

    def run(invocation: str) -> None:
        with log_context(invocation_id=invocation):
            barrier.wait()
            seen[invocation] = _record("rollout", "m").invocation_id  # type: ignore[attr-defined]

    threads = [threading.Thread(target=run, args=(f"inv-{n}",)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"inv-0": "inv-0", "inv-1": "inv-1"}


def test_install_is_idempotent_and_extra_with_other_names_still_works(caplog: pytest.LogCaptureFixture) -> None:
    logcontext.install()
    logcontext.install()
    with caplog.at_level(logging.INFO, logger="rollout"), log_context(rollout_id="r9"):
        logging.getLogger("rollout.x").info("delivered", extra={"channel": "teams"})
    (record,) = [r for r in caplog.records if r.name == "rollout.x"]
    assert record.channel == "teams" and record.rollout_id == "r9"  # type: ignore[attr-defined]
    assert record.getMessage() == "delivered [rollout_id=r9]"  # the suffix once, not once per install
