"""``get ID --watch`` in a pseudo-terminal: the view is redrawn in place (rich.live) until the rollout
ends, then the final line. The terminal's screen is emulated with pyte, as a person would see it."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pyte
import pytest

from tests.cli.apiserver import FakeWorld, serve

REPO = Path(__file__).resolve().parents[2]
COLUMNS, LINES = 120, 40


def run_in_pty(args: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, bytes]:
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmss_canary_cli", *args],
        cwd=REPO,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={**os.environ, **env, "COLUMNS": str(COLUMNS), "LINES": str(LINES), "TERM": "xterm-256color"},
        close_fds=True,
    )
    os.close(follower)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=10), bytes(output)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)


def screen_of(output: bytes) -> list[str]:
    screen = pyte.Screen(COLUMNS, LINES)
    stream = pyte.ByteStream(screen)
    stream.feed(output.replace(b"\n", b"\r\n") if b"\r\n" not in output else output)
    return [line.rstrip() for line in screen.display]


def test_watch_redraws_in_place_until_the_rollout_ends(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    world = FakeWorld(size=4, auto_tick=True)
    rid = world.release("install_nginx.v1.sh")
    with serve(world, monkeypatch, tmp_path) as host:
        env = {"VMSS_CANARY_URL": host.url, "VMSS_CANARY_KEY": host.function_key}
        code, output = run_in_pty(["get", rid, "--watch", "--interval", "0.2", "--events", "3"], env)
    text = output.decode("utf-8", "replace")
    assert code == 0, text
    # Each phase was on screen at some point, and the view went back up to redraw (cursor up, erase line).
    for phase in ("Canary", "Baking", "Promoting", "Succeeded"):
        assert phase in text
    assert text.count("\x1b[1A") > 10 and "\x1b[2K" in text
    assert "\x1b[32m" in text or "\x1b[1;32m" in text  # a terminal gets colours
    screen = [line for line in screen_of(output) if line]
    # Redrawn in place: the final screen holds one view, not one per poll.
    assert sum(line.startswith("rollout ") for line in screen) == 1
    assert sum(line.startswith("phase ") for line in screen) == 1
    assert any("Succeeded" in line for line in screen if line.startswith("phase "))
    assert any("4/4 instances on the new release" in line for line in screen)
    assert screen[-1].startswith(f"{rid}: Succeeded (exit 0)")


def test_watch_of_a_rollback_ends_with_its_exit_code_and_in_a_log_writes_lines(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    world = FakeWorld(size=3, auto_tick=True)
    world.scale_set.broken_releases.add("install_nginx.v2.sh")
    rid = world.release("install_nginx.v2.sh")
    with serve(world, monkeypatch, tmp_path) as host:
        env = {**os.environ, "VMSS_CANARY_URL": host.url, "VMSS_CANARY_KEY": host.function_key}
        # Not a terminal (a CI log): one line per change, no cursor movement, no colour.
        done = subprocess.run(
            [sys.executable, "-m", "vmss_canary_cli", "get", rid, "--watch", "--interval", "0.2"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 3, done.stdout + done.stderr
    assert "\x1b[" not in done.stdout
    lines = done.stdout.splitlines()
    assert any("] Canary " in line for line in lines) and any("] RollingBack " in line for line in lines)
    assert lines[-1].startswith(f"{rid}: RolledBack (exit 3)")


def test_release_get_watch_of_a_one_target_group_shows_its_rollout_under_the_group(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    world = FakeWorld(size=3, auto_tick=True)
    world.scale_set.broken_releases.add("install_nginx.v1.sh")
    rid = world.release("install_nginx.v1.sh")
    with serve(world, monkeypatch, tmp_path) as host:
        env = {"VMSS_CANARY_URL": host.url, "VMSS_CANARY_KEY": host.function_key}
        code, output = run_in_pty(["release-get", rid, "--watch", "--interval", "0.2", "--events", "2"], env)
    text = output.decode("utf-8", "replace")
    assert code == 3, text  # the group halted because its one target rolled back
    screen = [line for line in screen_of(output) if line]
    assert sum(line.startswith(f"group release {rid} (group default): ") for line in screen) == 1
    assert any(line.startswith("phase ") and "RolledBack" in line for line in screen)
    final = [line for line in screen[-3:] if line.startswith(f"{rid}: ")]  # the long final line wraps
    assert final and final[0].startswith(f"{rid}: Halted (exit 3) rg:vmss: RolledBack: canary unhealthy")
