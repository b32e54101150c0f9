"""``make twin`` (``python -m emulator.twin``): the twin starts as a process, prints endpoints that work,
keeps running, and stops everything on SIGINT or SIGTERM."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "emulator.twin", "--instances", "2", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _endpoints(proc: subprocess.Popen[str], timeout: float = 120) -> dict[str, str]:
    """Read the output until the endpoint list is complete (the master key is its last line)."""
    assert proc.stdout is not None
    found: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        match = re.match(r"^  (\S.*?)\s{2,}(\S.*)$", line.rstrip("\n"))
        if match:
            found[match[1]] = match[2]
            if match[1] == "master key":
                return found
    raise AssertionError("the twin did not print its endpoints:\n" + "".join(lines))


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_make_twin_prints_working_endpoints_and_stops_everything_on_a_signal(stop_signal: int) -> None:
    if shutil.which("nginx") is None or shutil.which("bwrap") is None:
        pytest.fail("nginx and bubblewrap are needed: run `make setup`", pytrace=False)
    proc = _start("--lb-address", "127.0.9.3", "--address-base", "127.0.51.1")
    try:
        endpoints = _endpoints(proc)
        assert endpoints["load balancer"] == "http://127.0.9.3/"
        assert {endpoints["instance 0"], endpoints["instance 1"]} == {"http://127.0.51.1/", "http://127.0.51.2/"}
        assert "Welcome to nginx!" in requests.get(endpoints["load balancer"], timeout=5).text
        api = endpoints["Functions host"].split()[0]
        key = endpoints["function key"]
        assert requests.get(f"{api}/rollouts", timeout=10).status_code == 401
        listing = requests.get(f"{api}/rollouts", headers={"x-functions-key": key}, timeout=10)
        assert listing.status_code == 200 and listing.json()["rollouts"] == []
        fleet = requests.get(f"{api}/fleet", headers={"x-functions-key": key}, timeout=10).json()
        assert fleet["summary"]["instances"] == 2 and fleet["summary"]["healthy"] == 2
        assert proc.poll() is None  # still running: it runs until told to stop
        proc.send_signal(stop_signal)
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)  # the twin prints every thread's stack
            time.sleep(2)
            proc.kill()
            output = proc.communicate()[0]
            raise AssertionError(f"the twin did not stop within 120 s of the signal; its output:\n{output}") from None
        assert code == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rest = proc.stdout.read() if proc.stdout else ""
    assert "interrupted: everything stopped." in rest
    for address in (endpoints["load balancer"], endpoints["instance 0"], api):
        with pytest.raises(requests.ConnectionError):
            requests.get(address, timeout=2)


def test_make_twin_refuses_to_start_when_port_80_is_taken() -> None:
    import socket

    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.9.4", 80))
        holder.listen()
        proc = _start("--lb-address", "127.0.9.4", "--address-base", "127.0.52.1")
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "cannot listen on 127.0.9.4:80" in output


def test_every_twin_option_but_the_programs_is_a_command_line_option_with_its_default() -> None:
    # v0_script, signals and settings are for programs (bench/judge.py), not people: they keep their defaults.
    import argparse

    from emulator.twin import TwinOptions, add_twin_arguments, options_from_arguments

    parser = argparse.ArgumentParser()
    add_twin_arguments(parser)
    assert options_from_arguments(parser, parser.parse_args([])) == TwinOptions()
    given = ["--instances", "5", "--bake", "3", "--tick", "0.5", "--upgrade-seconds", "2", "--failure-threshold", "4"]
    given += ["--lb-address", "127.0.9.9", "--address-base", "127.0.70.1"]
    assert options_from_arguments(parser, parser.parse_args(given)) == TwinOptions(
        5, 3, 0.5, 2.0, 4, "127.0.9.9", "127.0.70.1"
    )
    with pytest.raises(SystemExit):
        options_from_arguments(parser, parser.parse_args(["--instances", "0"]))
