"""When the engine wants its next look at a rollout, earlier than the timer would give it (pure).

The timer (``ROLLOUT_TICK_SCHEDULE``, every 30 s by default) looks at every target with work. Waiting for it
after each step loses about half a period per step, and a rollout has several steps (the canary, the bake,
every batch). So a tick that leaves a rollout waiting for something with a known or near end asks for its
own next look, which ``function_app.advance_target`` delivers as a tick-queue message with a visibility
delay (``rollout.fanout.follow_up``):

* **Baking:** a look when the bake ends (``phase_since + BAKE_SECONDS``), so promotion starts on time.
* **Canary, Promoting, RollingBack:** an upgrade or a rollback is in flight: a look every
  ``LOOK_INTERVAL_SECONDS`` times the number of targets the timer found with work, so the looks of all
  targets together draw about the ARM reads of one target's (each look reads the fleet: the scale set and
  its list pages).
* **Nothing else:** a paused or failed rollout waits for a person, a finished one for nothing.

Two rules keep the looks few and failure detection unchanged:

* **While any observation is failing** (``unhealthy_streak > 0``) there is no earlier look: consecutive
  failing observations (``FAILURE_THRESHOLD``) keep the timer's spacing, so a short blip does not roll a
  release back sooner than before.
* **One chain of looks per rollout.** A look carries a stamp of the rollout as the tick that asked for it
  left it (``stamp``). A look whose rollout has changed since is superseded (another tick moved it on
  and asked for its own look) and does nothing, without reading ARM. Only a tick that changed the rollout,
  or a look that was still current, asks for the next one: a timer tick that changed nothing leaves the
  chain as it is.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from rollout.model import Phase, Rollout
from rollout.policy import RolloutPolicy

IN_FLIGHT = frozenset({Phase.CANARY, Phase.PROMOTING, Phase.ROLLING_BACK})


def stamp(rollout: Rollout) -> str:
    """The rollout as a tick left it: its id and the ETag of its row (every save changes it; the store
    hands it back exactly as it was written). A rollout never saved has none: its ``updated_at`` then."""
    return f"{rollout.id}|{rollout.etag or rollout.updated_at.isoformat()}"


def rollout_of(stamp_text: str) -> str:
    """The rollout id a stamp (``stamp``) names."""
    return stamp_text.split("|", 1)[0]


def next_look(rollout: Rollout | None, policy: RolloutPolicy, now: datetime, share: int = 1) -> datetime | None:
    """The time the engine wants to look at ``rollout`` again, or None (the timer is enough).

    ``share``: how many targets the timer found with work (at least 1); the look interval grows with it."""
    interval = policy.look_interval_seconds
    if rollout is None or interval <= 0 or rollout.unhealthy_streak > 0:
        return None
    if rollout.phase is Phase.BAKING:
        if rollout.skip_bake:
            return now + timedelta(seconds=interval)
        end = rollout.phase_since + timedelta(seconds=policy.bake_seconds)
        return end if end > now else None
    if rollout.phase in IN_FLIGHT:
        return now + timedelta(seconds=interval * max(1, share))
    return None
