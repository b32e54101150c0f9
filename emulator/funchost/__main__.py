"""``python -m emulator.funchost``: host an app from the command line, as ``func start`` would."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from emulator.easyauth import CLAIM_NAMES, DEFAULT_AUDIENCE, DEFAULT_ISSUER, EasyAuthSettings
from emulator.funchost.blob import DEFAULT_MAX_DEQUEUE_COUNT
from emulator.funchost.core import HostStartupError, load_app
from emulator.funchost.environment import load_settings_file, route_prefix_from_host_json
from emulator.funchost.host import LocalFunctionsHost
from emulator.funchost.http import WEB_CONFIG_MAX_URL_BYTES
from emulator.funchost.keys import KEYS_FILE
from emulator.funchost.queue import QueueOptions


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m emulator.funchost", description="A local Azure Functions host")
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    parser.add_argument("--script-root", default=".", help="directory with the app, host.json, settings")
    parser.add_argument("--settings", help="local.settings.json (default: <script-root>/local.settings.json)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--state-dir", help="keys and blob receipts (default: <script-root>/.funchost)")
    parser.add_argument("--timer-period", type=float, help="fire every timer every N seconds (demos)")
    parser.add_argument("--blob-poll", type=float, default=1.0, help="blob container poll interval, s")
    parser.add_argument("--max-dequeue", type=int, default=DEFAULT_MAX_DEQUEUE_COUNT)
    parser.add_argument("--functions", nargs="*", help="host only these functions")
    parser.add_argument("--verbose", "-v", action="store_true")
    parser.add_argument(
        "--max-url-bytes", type=int, help=f"answer 414 to longer URLs ({WEB_CONFIG_MAX_URL_BYTES}: the Windows host's)"
    )
    auth = parser.add_argument_group("App Service authentication (emulator/easyauth.py); on with --easy-auth-key")
    auth.add_argument("--easy-auth-key", help="PEM public key tokens must be signed with (easyauth keygen)")
    auth.add_argument("--easy-auth-issuer", default=DEFAULT_ISSUER)
    auth.add_argument("--easy-auth-audience", action="append", help=f"allowed audience (default {DEFAULT_AUDIENCE})")
    auth.add_argument("--easy-auth-allow-anonymous", action="store_true", help="requireAuthentication off")
    auth.add_argument("--easy-auth-claims", choices=CLAIM_NAMES, default="token", help="principal claim names")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    easy_auth = None
    if args.easy_auth_key:
        easy_auth = EasyAuthSettings(
            issuer=args.easy_auth_issuer,
            audiences=tuple(args.easy_auth_audience or [DEFAULT_AUDIENCE]),
            public_key_pem=Path(args.easy_auth_key).read_bytes(),
            require_authentication=not args.easy_auth_allow_anonymous,
            claim_names=args.easy_auth_claims,
        )
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    script_root = Path(args.script_root).resolve()
    sys.path.insert(0, str(script_root))
    settings_path = Path(args.settings) if args.settings else script_root / "local.settings.json"
    env = load_settings_file(settings_path) if settings_path.exists() else {}
    # Settings must be in the environment before the app module is imported: apps read them at import.
    os.environ.update(env)
    try:
        host = LocalFunctionsHost(
            load_app(args.app),
            env=env,
            http_host=args.host,
            http_port=args.port,
            route_prefix=route_prefix_from_host_json(script_root),
            timer_period_seconds=args.timer_period,
            blob_poll_seconds=args.blob_poll,
            blob_max_dequeue_count=args.max_dequeue,
            state_dir=args.state_dir or script_root / ".funchost",
            functions=args.functions,
            easy_auth=easy_auth,
            max_url_bytes=args.max_url_bytes,
            queue_options=QueueOptions.from_host_json(script_root),
        )
        host.start()
    except HostStartupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    print(f"Functions host listening on {host.api_url}")
    for hosted in host.http_functions:
        methods = ",".join(sorted(hosted.methods)) if hosted.methods else "ALL"
        print(f"  {hosted.name}: [{methods}] {host.api_url}/{hosted.route.template} ({hosted.auth_level})")
    for name in host.function_names[len(host.http_functions) :]:
        print(f"  {name}: {host.trigger_kind_of(name)} trigger")
    print(f"Function key: {host.function_key}\nMaster key: {host.master_key}  (in {host.state_dir / KEYS_FILE})")
    if easy_auth is not None:
        print(f"App Service authentication: issuer {easy_auth.issuer}, audiences {', '.join(easy_auth.audiences)}")
    with contextlib.suppress(KeyboardInterrupt):
        stopped.wait()
    host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
