"""``vmss-canary``: the operator's command line for the HTTP API (README, "The command line").

Installed with ``pip install .[cli]``. Nothing in ``function_app.py`` or ``rollout/`` imports this
package, and nothing here imports them: the function app deploys without typer and rich.
"""

from __future__ import annotations

import sys


def main() -> None:
    """The console script: the typer app, or a clear message when the ``cli`` extra is missing."""
    try:
        from vmss_canary_cli.app import run
    except ModuleNotFoundError as exc:  # typer or rich not installed: `pip install .` without [cli]
        print(
            f"vmss-canary: {exc.name} is not installed; install the command line with: pip install 'vmss-canary[cli]'",
            file=sys.stderr,
        )
        sys.exit(2)
    sys.exit(run())
