"""``NginxRuntime``: an emulated VM instance that is a real nginx, configured by a real release script.

Each instance owns a root directory ``<state_dir>/<address>/`` holding what a VM's disk would:

    etc/nginx/           the instance's nginx config (empty on a bare image)
    var/www/html/        the instance's web root
    var/log/nginx/, var/lib/nginx/, run/     nginx's logs, temp dirs and pid file
    var/lib/waagent/custom-script/download/<n>/   one download dir per CustomScript enable
    twin/                runtime bookkeeping: the launch copy of the config, service requests, stderr

Design decisions:

* **Images are content profiles** (``image_profile_for``), chosen by the last segment of the image id:
  ``...nginx-updated-image`` has nginx installed with the walkthrough's updated page ("Welcome to nginx
  on Azure VMSS!"), ``...nginx-vN-image`` has nginx with "Welcome to nginx vN!", ``...nginx-broken-image``
  has nginx with an invalid config, any other id containing ``nginx`` (``nginx-base-image``) has stock
  nginx, and everything else (the default ``UbuntuLTS``, or no image) is a bare VM without nginx, as in
  the walkthrough, where ``install_nginx.sh`` installs it.
* **nginx runs in its own bubblewrap sandbox** so that the instance's config is used verbatim: the
  instance's ``etc/nginx`` is mounted at ``/etc/nginx``, its web root at ``/var/www/html`` and so on,
  which makes Debian's stock config (``include /etc/nginx/sites-enabled/*``, ``root /var/www/html``,
  ``pid /run/nginx.pid``) work unchanged. The network is shared with the host, so nginx can bind the
  instance's loopback address.
* **One rewrite, in a launch copy**: a VM's ``listen 80`` binds the VM's own address; here it would bind
  every address of the host. So nginx is started from a copy of ``etc/nginx`` in which ``listen``
  directives are pinned to the instance address (port 80 maps to the runtime's ``port``; IPv6 listens
  are dropped). The instance's own files are never altered, and ``nginx -t`` checks the copy, so a
  config a script broke still fails to start. The copy also gets ``conf.d/zz-twin-signals.conf``: a
  second access log with ``$request_time`` that the emulator's Azure Monitor endpoints read
  (``emulator.telemetry``). A ``listen`` that does not start its line (``server { listen 80; ... }`` on
  one line) is not pinned: it binds every address, and a second instance then fails to start.
* **After every extension run nginx is restarted** (``nginx -t`` first). If it cannot start, the
  instance serves nothing (connection refused) and ``last_nginx_error`` says why; the extension result
  still reflects only the script's own exit, as on Azure, so the failure is the health probe's to find.
  The one exception is a script that asked for ``systemctl stop nginx`` (or disable/mask) last: then
  nginx stays down, as the script wanted.
* **An upgrade that changes the image id reimages** the instance first (Azure replaces the OS disk when
  the model's image changes), then runs the extension on the fresh disk. A model without an image id
  (``image_id=None``) leaves the disk as it is.
* **No process survives**: nginx is started with ``--die-with-parent`` from one long-lived spawner thread
  (the parent-death signal is tied to the *thread* that forked the child, and the ARM emulator calls us
  from short-lived worker threads), in its own PID namespace (killing the sandbox kills every worker),
  in its own process group (``stop`` kills the group after a graceful ``SIGQUIT``), and an ``atexit``
  hook stops every instance still running.
* ``set_healthy(False)`` stops nginx (the probe sees connection refused) until ``set_healthy(True)``.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import ipaddress
import itertools
import os
import queue
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from emulator.customscript import (
    CUSTOM_SCRIPT_PUBLISHER,
    CUSTOM_SCRIPT_TYPE,
    DEFAULT_TIMEOUT_S,
    BlobFetcher,
    CustomScriptHandler,
    InstanceDirs,
    install_stock_nginx,
)
from emulator.runtime import ExtensionResult, InstanceModel
from emulator.telemetry import (
    TWIN_CONF,
    TWIN_CONF_NAME,
    TWIN_LOG_NAME,
    AccessLogReader,
    RequestLog,
    RequestRecord,
    process_cpu_seconds,
)

NGINX_BIN = "/usr/sbin/nginx"
BWRAP_BIN = "/usr/bin/bwrap"
STOP_SIGNALS = frozenset({"stop", "disable", "mask"})  # service requests that keep nginx down


class ImageProfile(str, enum.Enum):
    BARE = "bare"  # a fresh Ubuntu VM: no nginx
    NGINX = "nginx"  # nginx-base-image: stock nginx, stock page
    NGINX_UPDATED = "nginx-updated"  # the walkthrough's nginx-updated-image
    NGINX_VERSIONED = "nginx-versioned"  # nginx-vN-image: "Welcome to nginx vN!"
    NGINX_BROKEN = "nginx-broken"  # nginx installed with a config that does not parse


_VERSIONED_IMAGE = re.compile(r"nginx-v(\d+)-image$")


def image_name(image_id: str | None) -> str:
    return (image_id or "").rstrip("/").rsplit("/", 1)[-1].lower()


def image_profile_for(image_id: str | None) -> ImageProfile:
    """The content profile of an image id (see the module docstring)."""
    name = image_name(image_id)
    if name.endswith("nginx-updated-image"):
        return ImageProfile.NGINX_UPDATED
    if name.endswith("nginx-broken-image"):
        return ImageProfile.NGINX_BROKEN
    if _VERSIONED_IMAGE.search(name):
        return ImageProfile.NGINX_VERSIONED
    if "nginx" in name:
        return ImageProfile.NGINX
    return ImageProfile.BARE


_LISTEN = re.compile(r"^(?P<indent>[ \t]*)listen(?P<ws>\s+)(?P<addr>[^\s;]+)(?P<rest>[^;]*;)", re.M)


def pin_listen_directives(text: str, address: str, port: int) -> str:
    """Pin every ``listen`` to ``address`` (port 80 becomes ``port``); drop IPv6 listens."""

    def pin(m: re.Match[str]) -> str:
        addr = m.group("addr")
        if addr.startswith("unix:"):
            return m.group(0)
        if addr.startswith("["):
            return f"{m.group('indent')}# dropped by the twin (no IPv6): listen {addr}{m.group('rest')}"
        host, _, tail = addr.rpartition(":")
        if not host and not tail.isdigit():
            tail = "80"  # "listen localhost;" means port 80
        listen_port = int(tail) if tail.isdigit() else 80
        mapped = port if listen_port == 80 else listen_port
        return f"{m.group('indent')}listen{m.group('ws')}{address}:{mapped}{m.group('rest')}"

    return _LISTEN.sub(pin, text)


class _Spawner:
    """Forks every nginx sandbox from one long-lived daemon thread.

    ``--die-with-parent`` uses PR_SET_PDEATHSIG, which fires when the forking *thread* exits; forking
    from here ties nginx's life to the Python process, not to whichever worker thread asked for it.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[list[str], dict[str, Any], Future[subprocess.Popen[bytes]]]] = (
            queue.Queue()
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="nginx-spawner", daemon=True)
                self._thread.start()
        fut: Future[subprocess.Popen[bytes]] = Future()
        self._jobs.put((argv, kwargs, fut))
        return fut.result(timeout=30)

    def _loop(self) -> None:
        while True:
            argv, kwargs, fut = self._jobs.get()
            try:
                fut.set_result(subprocess.Popen(argv, **kwargs))
            except BaseException as exc:  # handed to the caller, who raises it
                fut.set_exception(exc)


_SPAWNER = _Spawner()
_LIVE: weakref.WeakSet[NginxRuntime] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for runtime in list(_LIVE):
        with contextlib.suppress(Exception):
            runtime.stop()


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) follows the parenthesised command name, which may itself contain spaces.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree(root_pid: int) -> list[int]:
    """``root_pid`` and all its live descendants (host pids), parents before children."""
    children = _children_map()
    out, todo = [], [root_pid]
    while todo:
        pid = todo.pop(0)
        if pid == root_pid and not Path(f"/proc/{pid}").exists():
            continue
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class NginxRuntime:
    """One emulated instance: its disk under ``root`` and, when it serves, an nginx sandbox."""

    def __init__(
        self,
        address: str,
        initial: InstanceModel,
        *,
        state_dir: Path,
        handler: CustomScriptHandler,
        port: int = 80,
        nginx_bin: str = NGINX_BIN,
        bwrap: str = BWRAP_BIN,
        start_timeout_s: float = 5.0,
    ) -> None:
        ip = ipaddress.ip_address(address)
        if ip.version != 4 or not ip.is_loopback:
            raise ValueError(f"instance address must be an IPv4 loopback address, got {address!r}")
        self.address = address
        self.port = port
        self.root = Path(state_dir) / address
        self.handler = handler
        self.nginx_bin = nginx_bin
        self.bwrap = bwrap
        self.start_timeout_s = start_timeout_s
        self.image_id = initial.image_id
        self.last_nginx_error: str | None = None
        self.service_requests: list[str] = []  # what the last script asked of systemctl/service
        self._healthy = True
        self._service_wanted = True
        self._proc: subprocess.Popen[bytes] | None = None
        self._seq = 0
        self._lock = threading.RLock()
        self._stopped = False
        # What the instance served (emulator.telemetry): nginx's extra access log, read incrementally and
        # kept in memory, so a re-laid disk does not lose what was served before.
        self._requests = RequestLog()
        self._access_log = AccessLogReader(self.root / "var" / "log" / "nginx" / TWIN_LOG_NAME, self._requests)
        self._lay_image(initial.image_id)
        _LIVE.add(self)

    # -- paths ---------------------------------------------------------------------------------------

    @property
    def etc_nginx(self) -> Path:
        return self.root / "etc" / "nginx"

    @property
    def www_html(self) -> Path:
        return self.root / "var" / "www" / "html"

    @property
    def _twin(self) -> Path:
        return self.root / "twin"

    @property
    def nginx_installed(self) -> bool:
        return (self.etc_nginx / "nginx.conf").exists()

    @property
    def serving(self) -> bool:
        """True while the nginx sandbox is running (it may still answer errors)."""
        return self._proc is not None and self._proc.poll() is None

    def pids(self) -> list[int]:
        """Host pids of the nginx sandbox (bwrap, its init, nginx master and workers)."""
        proc = self._proc
        return process_tree(proc.pid) if proc is not None and proc.poll() is None else []

    # -- InstanceRuntime -----------------------------------------------------------------------------

    def start(self) -> None:
        """Boot. Raises OSError (EADDRINUSE) when another process holds address:port, so the ARM
        emulator can move on to another address, even if this image has no nginx to bind it yet."""
        with self._lock:
            self._ensure_not_stopped()
            if not self.serving:
                with socket.socket() as probe:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    probe.bind((self.address, self.port))  # raises OSError(EADDRINUSE)
            if not self.serving and self._healthy and self._service_wanted and self.nginx_installed:
                self._start_nginx()

    def apply(self, model: InstanceModel) -> ExtensionResult:
        with self._lock:
            self._ensure_not_stopped()
            if model.image_id is not None and image_name(model.image_id) != image_name(self.image_id):
                # Azure replaces the OS disk when the model's image changes: start from the new image.
                self._stop_nginx()
                self._lay_image(model.image_id)
                self.image_id = model.image_id
            result = self._run_extension(model)
            self._restart_nginx()
            return result

    def reimage(self, model: InstanceModel) -> ExtensionResult:
        with self._lock:
            self._ensure_not_stopped()
            self._stop_nginx()
            self._lay_image(model.image_id)
            self.image_id = model.image_id
            self._service_wanted = True
            return self.apply(model)

    def set_healthy(self, healthy: bool) -> None:
        with self._lock:
            self._healthy = healthy
            if self._stopped:
                return
            if not healthy:
                self._stop_nginx()
            elif not self.serving and self._service_wanted and self.nginx_installed:
                self._start_nginx()

    def stop(self) -> None:
        with self._lock:
            self._stop_nginx()
            self._stopped = True
            shutil.rmtree(self.root, ignore_errors=True)
            _LIVE.discard(self)

    # -- telemetry (emulator.telemetry.ObservableRuntime) ---------------------------------------------

    def requests_between(self, start: float, end: float) -> list[RequestRecord]:
        self._access_log.ingest()
        return self._requests.between(start, end)

    def cpu_seconds(self) -> float | None:
        pids = self.pids()
        return process_cpu_seconds(pids) if pids else None

    # -- the disk ------------------------------------------------------------------------------------

    def _ensure_not_stopped(self) -> None:
        if self._stopped:
            raise RuntimeError(f"instance {self.address} was stopped")

    def _lay_image(self, image_id: str | None) -> None:
        """Wipe the root and lay down the image's content profile."""
        self._access_log.forget()
        shutil.rmtree(self.root, ignore_errors=True)
        for d in (
            self.etc_nginx,
            self.www_html,
            self.root / "var" / "log" / "nginx",
            self.root / "var" / "lib" / "nginx",
            self.root / "run",
            self._twin,
        ):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        self._service_wanted = True
        profile = image_profile_for(image_id)
        if profile is ImageProfile.BARE:
            return
        install_stock_nginx(self.handler.support_dir, self.etc_nginx, self.www_html)
        page = self.www_html / "index.nginx-debian.html"
        if profile is ImageProfile.NGINX_UPDATED:
            # The walkthrough's Packer provisioner line, applied at "image build" time.
            page.write_text(page.read_text().replace("Welcome to nginx", "Welcome to nginx on Azure VMSS"))
        elif profile is ImageProfile.NGINX_VERSIONED:
            match = _VERSIONED_IMAGE.search(image_name(image_id))
            version = match.group(1) if match else "?"
            page.write_text(page.read_text().replace("Welcome to nginx", f"Welcome to nginx v{version}"))
        elif profile is ImageProfile.NGINX_BROKEN:
            (self.etc_nginx / "conf.d" / "broken.conf").write_text("this is not an nginx directive;\n")

    # -- the extension -------------------------------------------------------------------------------

    def _run_extension(self, model: InstanceModel) -> ExtensionResult:
        self.service_requests = []
        if model.extension_type is None and model.extension_publisher is None:
            return ExtensionResult(succeeded=True, message="no extension in the model: nothing to run")
        if (model.extension_publisher, model.extension_type) != (CUSTOM_SCRIPT_PUBLISHER, CUSTOM_SCRIPT_TYPE):
            return ExtensionResult(
                succeeded=False,
                message=f"extension {model.extension_publisher}/{model.extension_type} is not emulated "
                f"(only {CUSTOM_SCRIPT_PUBLISHER}/{CUSTOM_SCRIPT_TYPE})",
            )
        requests_file = self._twin / "service" / "requests"
        requests_file.parent.mkdir(parents=True, exist_ok=True)
        requests_file.write_text("")
        dirs = InstanceDirs(
            etc_nginx=self.etc_nginx,
            www_html=self.www_html,
            service_requests=requests_file,
            hostname=f"vmss-{self.address.replace('.', '-')}",
        )
        download = self.root / "var" / "lib" / "waagent" / "custom-script" / "download" / str(self._seq)
        self._seq += 1
        result = self.handler.enable(model.settings, model.protected_settings, dirs, download)
        self.service_requests = [line for line in requests_file.read_text().splitlines() if line.strip()]
        nginx_verbs = [r.split()[0] for r in self.service_requests if r.split()[1:] == ["nginx"]]
        if nginx_verbs:
            self._service_wanted = nginx_verbs[-1] not in STOP_SIGNALS
        else:
            self._service_wanted = True
        return result

    # -- nginx ---------------------------------------------------------------------------------------

    def _restart_nginx(self) -> None:
        self._stop_nginx()
        if not self.nginx_installed:
            self.last_nginx_error = "nginx is not installed on this instance"
            return
        if self._healthy and self._service_wanted:
            self._start_nginx()

    def _prepare_launch_conf(self) -> Path:
        launch = self._twin / "launch" / "etc-nginx"
        shutil.rmtree(launch, ignore_errors=True)
        shutil.copytree(self.etc_nginx, launch, symlinks=True)
        for path in launch.rglob("*"):
            if path.is_symlink() or not path.is_file():
                continue
            try:
                text = path.read_text()
            except (UnicodeDecodeError, OSError):
                continue
            pinned = pin_listen_directives(text, self.address, self.port)
            if pinned != text:
                path.write_text(pinned)
        # Per-request records for the emulator's monitor endpoints (emulator.telemetry), in the launch copy
        # only: Debian's nginx.conf includes conf.d/*.conf inside its http block.
        if (launch / "conf.d").is_dir():
            (launch / "conf.d" / TWIN_CONF_NAME).write_text(TWIN_CONF)
        return launch

    def _sandbox_argv(self, launch: Path, nginx_args: list[str]) -> list[str]:
        return [
            self.bwrap,
            "--ro-bind", "/", "/",
            "--dev", "/dev",
            "--proc", "/proc",
            "--tmpfs", "/tmp",
            "--ro-bind", str(launch), "/etc/nginx",
            "--ro-bind", str(self.www_html), "/var/www/html",
            "--bind", str(self.root / "var" / "log" / "nginx"), "/var/log/nginx",
            "--bind", str(self.root / "var" / "lib" / "nginx"), "/var/lib/nginx",
            "--bind", str(self.root / "run"), "/run",
            "--unshare-pid", "--unshare-ipc", "--die-with-parent",
            # Just what an nginx master needs: bind port 80, switch to www-data, own its temp dirs.
            "--cap-drop", "ALL",
            "--cap-add", "CAP_NET_BIND_SERVICE",
            "--cap-add", "CAP_SETUID",
            "--cap-add", "CAP_SETGID",
            "--cap-add", "CAP_CHOWN",
            "--cap-add", "CAP_DAC_OVERRIDE",
            self.nginx_bin, *nginx_args,
        ]

    def _start_nginx(self) -> bool:
        launch = self._prepare_launch_conf()
        check = subprocess.run(
            self._sandbox_argv(launch, ["-t"]), capture_output=True, timeout=30, stdin=subprocess.DEVNULL
        )
        if check.returncode != 0:
            self.last_nginx_error = "nginx -t failed: " + check.stderr.decode(errors="replace").strip()
            return False
        stderr_path = self._twin / "nginx.stderr"
        with stderr_path.open("wb") as stderr:
            self._proc = _SPAWNER.popen(
                self._sandbox_argv(launch, ["-g", "daemon off;"]),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self.last_nginx_error = "nginx exited at start: " + stderr_path.read_text(errors="replace").strip()
                self._proc = None
                return False
            with socket.socket() as s:
                s.settimeout(0.2)
                if s.connect_ex((self.address, self.port)) == 0:
                    self.last_nginx_error = None
                    return True
            time.sleep(0.02)
        self.last_nginx_error = f"nginx did not listen on {self.address}:{self.port} within {self.start_timeout_s} s"
        self._stop_nginx()
        return False

    def _stop_nginx(self, grace_s: float = 3.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            # Graceful first: SIGQUIT to the nginx master (the sandbox ends when it exits).
            masters = [p for p in process_tree(proc.pid) if _comm(p) == "nginx"][:1]
            for pid in masters:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGQUIT)
            try:
                proc.wait(timeout=grace_s if masters else 0.1)
            except subprocess.TimeoutExpired:
                # The group is bwrap and everything under it; the PID namespace takes the rest.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


_HANDED_OUT: set[str] = set()
_HANDED_OUT_LOCK = threading.Lock()


def find_free_address(first: str = "127.0.20.1", last: str = "127.0.29.254", port: int = 80) -> str:
    """A loopback address in [first, last] where nothing listens on ``port``, never the same twice.

    Several people run tests on this machine at once: start at a random point of the range and test
    that the port can really be bound there (with SO_REUSEADDR, as nginx binds) before handing it out.
    """
    lo, hi = int(ipaddress.ip_address(first)), int(ipaddress.ip_address(last))
    start = random.randrange(lo, hi + 1)
    for n in itertools.chain(range(start, hi + 1), range(lo, start)):
        addr = str(ipaddress.ip_address(n))
        if addr.endswith((".0", ".255")):
            continue
        with _HANDED_OUT_LOCK:
            if addr in _HANDED_OUT:
                continue
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((addr, port))
                except OSError:
                    continue
            _HANDED_OUT.add(addr)
            return addr
    raise RuntimeError(f"no free address in {first}-{last} for port {port}")


def nginx_runtime_factory(
    state_dir: Path | str,
    blob_fetcher: BlobFetcher,
    port: int = 80,
    *,
    script_timeout_s: float = DEFAULT_TIMEOUT_S,
    unshare_net: bool = True,
    start_timeout_s: float = 5.0,
) -> Callable[[str, InstanceModel], NginxRuntime]:
    """A ``runtime_factory`` for the ARM emulator: ``factory(address, initial_model) -> NginxRuntime``.

    All instances share one CustomScript handler (its shims and nginx package live in
    ``<state_dir>/.support``); each instance's disk is ``<state_dir>/<address>``.
    """
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    handler = CustomScriptHandler(
        blob_fetcher, state / ".support", timeout_s=script_timeout_s, unshare_net=unshare_net
    )

    def factory(address: str, initial: InstanceModel) -> NginxRuntime:
        return NginxRuntime(
            address, initial, state_dir=state, handler=handler, port=port, start_timeout_s=start_timeout_s
        )

    return factory


def custom_script_model(
    file_uris: list[str],
    command: str,
    *,
    image_id: str | None = None,
    protected: Mapping[str, Any] | None = None,
) -> InstanceModel:
    """Convenience: the InstanceModel of a CustomScript 2.1 release (tests, demo, docs)."""
    return InstanceModel(
        image_id=image_id,
        extension_name="CustomScript",
        extension_publisher=CUSTOM_SCRIPT_PUBLISHER,
        extension_type=CUSTOM_SCRIPT_TYPE,
        extension_version="2.1",
        settings={"fileUris": list(file_uris), "commandToExecute": command},
        protected_settings=dict(protected or {}),
    )
