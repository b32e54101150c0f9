"""Notifications. The log is the default channel: in Azure it lands in Application Insights, where
alert rules fire on it. (A webhook/Teams notifier would implement the same one-method Protocol.)"""

from __future__ import annotations

import logging

from rollout.model import Phase, Rollout

log = logging.getLogger("rollout.notify")


class LogNotifier:
    """Implements ``rollout.ports.Notifier``: one structured log line per notification."""

    def notify(self, rollout: Rollout, message: str) -> None:
        bad = rollout.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.FAILED, Phase.ABORTED)
        log.log(
            logging.WARNING if bad else logging.INFO,
            "rollout %s (%s) %s: %s",
            rollout.id,
            rollout.release.label,
            rollout.phase.value,
            message,
            extra={"rollout_id": rollout.id, "phase": rollout.phase.value},
        )
