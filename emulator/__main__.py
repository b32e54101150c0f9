"""``python -m emulator serve``: run the ARM emulator as a process (for a demo or a local Functions host).

Prints ONE JSON line on stdout once it is listening, so a parent process can read the endpoint
without parsing logs or racing the port:

    {"url": "https://127.0.0.1:43121", "ca_bundle": "/tmp/.../certs/ca.pem", "token": "...",
     "subscription_id": "...", "scale_sets": [{"resource_group": "rg", "name": "vmss", ...}]}

and, with ``--info-file``, writes the same JSON there. Everything else (more scale sets, faults, the
request log) goes through the admin API (docs/emulator.md). Stops cleanly on SIGTERM / SIGINT:
runtimes are stopped, temp files removed.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from emulator.arm import DEFAULT_SUBSCRIPTION, ArmEmulator
from emulator.clock import SkipClock


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the ARM emulator until SIGTERM/SIGINT")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="0 = a free port (printed)")
    serve.add_argument("--token", default="emulator-token", help="the bearer token ARM and admin calls need")
    serve.add_argument("--state-dir", type=Path, default=None, help="certs etc.; default: a temp dir")
    serve.add_argument("--subscription-id", default=DEFAULT_SUBSCRIPTION)
    serve.add_argument("--address-base", default="127.0.10.1", help="first instance loopback address")
    serve.add_argument("--instance-port", type=int, default=80, help="port the synthetic instances serve on")
    serve.add_argument("--upgrade-seconds", type=float, default=2.0)
    serve.add_argument("--retry-after", type=float, default=1.0, help="LRO poll delay hint (s)")
    serve.add_argument("--page-size", type=int, default=50)
    serve.add_argument("--no-throttle", action="store_true", help="disable the per-scale-set token bucket")
    serve.add_argument(
        "--read-limit",
        default="250/25",
        help="each subscription's read bucket per region, SIZE/PER_SECOND (ARM's: 250/25), or 'none'",
    )
    serve.add_argument("--region", default="westeurope", help="the region whose read bucket requests draw from")
    serve.add_argument("--resource-group", default="rg-canary", help="for --instances")
    serve.add_argument("--name", default="vmss-canary", help="for --instances")
    serve.add_argument("--instances", type=int, default=0, help="create a scale set with N synthetic instances")
    serve.add_argument("--script-uri", default=None, help="initial CustomScript fileUris[0] of that scale set")
    serve.add_argument("--image-id", default=None, help="initial image id of that scale set")
    serve.add_argument(
        "--orchestration-mode",
        choices=("Uniform", "Flexible"),
        default="Uniform",
        help="orchestration mode of that scale set (Flexible: VMs named <name>_<hex>, docs/emulator.md)",
    )
    serve.add_argument(
        "--flexible-model-applied",
        choices=("absent", "in_vm_list"),
        default="absent",
        help="whether a Flexible scale set's VM list reports latestModelApplied (docs/emulator.md)",
    )
    serve.add_argument(
        "--model-applied",
        choices=("content", "version"),
        default="content",
        help="latestModelApplied: model content equality, or a model version counter (docs/emulator.md)",
    )
    serve.add_argument(
        "--upgrade-while-updating",
        choices=("accept", "conflict"),
        default="accept",
        help="manualupgrade naming an Updating instance: accepted, or 409 OperationNotAllowed",
    )
    serve.add_argument(
        "--readable-scope",
        action="append",
        default=None,
        metavar="SCOPE",
        help="a resource scope the caller may read (repeatable); none given = everything readable",
    )
    serve.add_argument("--image", action="append", default=[], metavar="ID", help="register an image id (repeatable)")
    serve.add_argument(
        "--skip-clock",
        action="store_true",
        help="run on a clock that skips idle time, jumped through POST /_admin/clock (emulator/clock.py); "
        "default: real time",
    )
    serve.add_argument("--info-file", type=Path, default=None, help="also write the startup JSON here")
    return parser


def _read_limit(text: str) -> tuple[float, float] | None:
    if text.strip().lower() == "none":
        return None
    size, _, rate = text.partition("/")
    try:
        return (float(size), float(rate or "25"))
    except ValueError:
        raise SystemExit(f"--read-limit {text!r}: expected SIZE/PER_SECOND such as 250/25, or none") from None


def serve(args: argparse.Namespace) -> int:
    emu = ArmEmulator(
        host=args.host,
        port=args.port,
        token=args.token,
        state_dir=args.state_dir,
        subscription_id=args.subscription_id,
        address_base=args.address_base,
        instance_port=args.instance_port,
        upgrade_seconds=args.upgrade_seconds,
        retry_after=args.retry_after,
        page_size=args.page_size,
        throttle=None if args.no_throttle else (12.0, 4.0),
        model_applied=args.model_applied,
        upgrade_while_updating=args.upgrade_while_updating,
        readable_scopes=args.readable_scope,
        read_limit=_read_limit(args.read_limit),
        region=args.region,
        flexible_model_applied=args.flexible_model_applied,
        clock=SkipClock() if args.skip_clock else None,
    )
    for image_id in args.image:
        emu.add_image(image_id)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    emu.start()
    try:
        scale_sets = []
        if args.instances:
            settings = None
            if args.script_uri:
                script = args.script_uri.rsplit("/", 1)[-1]
                settings = {"fileUris": [args.script_uri], "commandToExecute": f"bash {script}"}
            emu.create_scale_set(
                args.resource_group,
                args.name,
                args.instances,
                extension_settings=settings,
                image_id=args.image_id,
                orchestration_mode=args.orchestration_mode,
            )
            scale_sets.append(emu.describe(args.resource_group, args.name))
        info = {
            "url": emu.url,
            "ca_bundle": emu.ca_bundle,
            "token": emu.token,
            "subscription_id": emu.subscription_id,
            "scale_sets": scale_sets,
        }
        line = json.dumps(info)
        if args.info_file:
            args.info_file.write_text(line + "\n")
        print(line, flush=True)
        stop.wait()
    finally:
        emu.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
