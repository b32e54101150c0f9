"""``bash -n`` on a release script before it reaches a single VM.

A syntax error would otherwise surface only as a failed extension on the canary, minutes later and
after an ARM write and an upgrade. The check parses without running anything (``-n``), reads the
script from stdin (nothing touches the disk), and is bounded in time. Where no bash exists, the
check is skipped and says so: the canary still catches the error.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess

log = logging.getLogger("rollout.scriptcheck")

TIMEOUT_SECONDS = 5.0


class BashSyntaxChecker:
    """Implements ``rollout.ports.ScriptChecker``."""

    def __init__(self, bash: str | None = None) -> None:
        self.bash = bash or shutil.which("bash")

    def problems(self, name: str, content: bytes) -> str | None:
        if self.bash is None:
            log.warning("no bash on this host: %s was not syntax-checked", name)
            return None
        try:
            proc = subprocess.run(
                [self.bash, "-n", "-s"],
                input=content,
                capture_output=True,
                timeout=TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"bash -n did not finish within {TIMEOUT_SECONDS:g} s"
        if proc.returncode == 0:
            return None
        # "bash: line 3: syntax error near unexpected token `fi'" -> name the script, keep bash's words.
        text = re.sub(r"^\S*bash: ", f"{name}: ", proc.stderr.decode("utf-8", "replace").strip(), flags=re.M)
        return f"syntax error (bash -n): {text[:500]}"
