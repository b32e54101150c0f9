"""The exit codes of ``vmss-canary``: one per way a command can end, so a pipeline can tell them apart.

README, "The command line", prints this table (a unit test checks the two agree).
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0  # the command did what it was asked; `release --wait`, `get --watch`: the release Succeeded
    API_ERROR = 1  # the API answered something unexpected (500, not JSON)
    BAD_INPUT = 2  # bad flags or arguments, a missing or misnamed release file, no URL
    ROLLED_BACK = 3  # the release ended RolledBack (the canary or an operator sent it back)
    ABORTED = 4  # the release ended Aborted (an operator stopped it)
    REJECTED = 5  # the release was Rejected (not newer, pre-flight refused it, bad content, superseded)
    FAILED = 6  # the rollout stopped Failed: it needs a human (`retry` or `abort`)
    HALTED = 7  # a group release Halted and no target's end says why (else its cause's code: 3, 4, 5 or 6)
    TIMEOUT = 8  # `--timeout` passed before the release ended
    UNREACHABLE = 9  # the API (or the storage account) cannot be reached, or answers 502/503/504
    AUTH = 10  # 401 or 403: no or a wrong function key, token, or app role
    NOT_FOUND = 11  # 404: no such rollout, release or route
    REFUSED = 12  # 400 or 409: the API refused the request (a verb that does not apply to the phase)


# How a rollout's or a group release's end maps to an exit code (every phase a watch or a wait stops on).
PHASE_EXIT: dict[str, ExitCode] = {
    "Succeeded": ExitCode.OK,
    "RolledBack": ExitCode.ROLLED_BACK,
    "Aborted": ExitCode.ABORTED,
    "Rejected": ExitCode.REJECTED,
    "Failed": ExitCode.FAILED,  # not final for the engine (retry), but the end of a wait: a human must act
    "Halted": ExitCode.HALTED,  # a group release: app.end_code gives the code of the target that halted it
}

MEANING: dict[ExitCode, str] = {
    ExitCode.OK: "done; for `release --wait` and `get --watch`: the release Succeeded",
    ExitCode.API_ERROR: "the API answered something unexpected (500, not JSON)",
    ExitCode.BAD_INPUT: "bad flags or arguments, a missing or misnamed release file, no API URL",
    ExitCode.ROLLED_BACK: "the release ended RolledBack",
    ExitCode.ABORTED: "the release ended Aborted",
    ExitCode.REJECTED: "the release was Rejected",
    ExitCode.FAILED: "the rollout stopped Failed (needs `retry` or `abort`)",
    ExitCode.HALTED: "a group release Halted and none of its targets' ends says why",
    ExitCode.TIMEOUT: "`--timeout` passed before the release ended",
    ExitCode.UNREACHABLE: "the API or the storage account cannot be reached (or answers 502/503/504)",
    ExitCode.AUTH: "401/403: missing or wrong key or token, or a missing app role",
    ExitCode.NOT_FOUND: "404: no such rollout, release or route",
    ExitCode.REFUSED: "400/409: the API refused the request (e.g. a verb that does not apply now)",
}


class CliError(Exception):
    """A command cannot go on: the message for the operator and the exit code."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.code = code
