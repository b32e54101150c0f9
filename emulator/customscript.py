"""The CustomScript extension handler of an emulated VM (Microsoft.Azure.Extensions/CustomScript 2.x).

What the real handler does on ``enable`` (Azure/custom-script-extension-linux, ``main/cmds.go``), and
what this module does instead:

* Settings: public and protected settings are merged; a key given in both is rejected ("'x' was
  specified both in public and protected settings; it must be specified only once"), exactly one of
  ``commandToExecute`` and ``script`` (base64, optionally gzip'd) must be present.
* Download: every ``fileUris`` entry goes into a fresh download directory, named after the last
  segment of the URL path, mode 0500; scripts (files starting with ``#!``) get a leading BOM removed and
  CRLF turned into LF, as the real handler's dos2unix pass does. The bytes come from an injected
  ``BlobFetcher`` (``url -> bytes``), which stands in for the VM's network and identity: the ARM
  emulator passes one that reads Azurite with the account key where a real VM would use its managed
  identity (``protectedSettings.managedIdentity``). ``azure_blob_fetcher`` and ``http_fetcher`` are the
  two stock fetchers.
* Run: ``/bin/sh -c <commandToExecute>`` in the download directory, but inside bubblewrap:

  - the host filesystem is read-only (``--ro-bind / /``) and capabilities are dropped
    (``--cap-drop ALL``), so even root inside cannot remount it writable;
  - the instance's own ``/etc/nginx`` and ``/var/www/html`` are bound writable at those paths, which is
    all a release script of this product touches; ``/tmp`` is a private tmpfs;
  - no network (``--unshare-net``: only a private loopback), own PID namespace (``--unshare-pid``:
    whatever the script leaves running dies with it, like nothing else on the host),
    ``--new-session`` (no terminal injection), ``--die-with-parent``;
  - a time limit (default 90 s): on expiry the whole sandbox is killed and the extension fails.

  The real handler has no time limit of its own (the guest agent gives up after 90 minutes); a short
  one keeps a hung release from hanging a test run.
* Shims, first on PATH, stand in for the parts of Ubuntu a release script uses: ``sudo`` (runs the
  rest of the command; the script already runs as root), ``apt-get``/``apt`` (``update`` is a no-op;
  ``install nginx`` lays down Debian's stock nginx config and default page, taken from the host's
  installed package files, if the instance has none; other packages are reported and succeed),
  ``systemctl``/``service`` (requests are appended to a file the runtime reads after the script).
* Report: exit code, and the last 4 KiB of stdout and stderr, formatted as the real handler's status
  message ("Enable succeeded: \\n[stdout]\\n...\\n[stderr]\\n..." / "Enable failed: ...").
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import ipaddress
import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator.runtime import ExtensionResult

BlobFetcher = Callable[[str], bytes]

CUSTOM_SCRIPT_PUBLISHER = "Microsoft.Azure.Extensions"
CUSTOM_SCRIPT_TYPE = "CustomScript"
MAX_TAIL_BYTES = 4 * 1024  # the real handler's maxTailLen
MAX_SCRIPT_CHARS = 256 * 1024  # the real handler's maxScriptSize
DEFAULT_TIMEOUT_S = 90.0

# Where Debian's nginx package keeps what ``apt-get install nginx`` puts on a fresh VM.
STOCK_NGINX_CONF_DIR = Path("/etc/nginx")
STOCK_NGINX_PAGE = Path("/usr/share/nginx/html/index.html")
NGINX_PACKAGES = ("nginx", "nginx-light", "nginx-core", "nginx-full", "nginx-extras", "nginx-common")


class FetchError(Exception):
    """A fileUris entry could not be downloaded (``status`` is the HTTP status when there was one)."""

    def __init__(self, url: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{url}: {message}")
        self.url = url
        self.status = status


class SettingsError(ValueError):
    """The extension settings are invalid, as the real handler's validation would say."""


@dataclass(frozen=True)
class ScriptConfig:
    """The merged, validated settings of one enable."""

    file_uris: tuple[str, ...]
    command: str  # what runs under /bin/sh -c (for ``script``: the path of the decoded script.sh)
    script: str | None = None  # the decoded inline script, when ``script`` was used
    skip_dos2unix: bool = False


@dataclass(frozen=True)
class InstanceDirs:
    """The host directories of one instance that a release script may write."""

    etc_nginx: Path
    www_html: Path
    service_requests: Path  # a file; the systemctl/service shims append "verb unit" lines to it
    hostname: str = "vmss-instance"


def parse_settings(settings: Mapping[str, Any], protected: Mapping[str, Any]) -> ScriptConfig:
    """Merge public and protected settings the way the real handler validates them."""
    both = sorted(set(settings) & set(protected))
    if both:
        raise SettingsError(
            f"'{both[0]}' was specified both in public and protected settings; it must be specified only once"
        )
    merged = {**settings, **protected}
    command = merged.get("commandToExecute") or ""
    script_b64 = merged.get("script") or ""
    if not isinstance(command, str) or not isinstance(script_b64, str):
        raise SettingsError("'commandToExecute' and 'script' must be strings")
    if command and script_b64:
        raise SettingsError("'commandToExecute' and 'script' were both specified; only one is allowed")
    if not command and not script_b64:
        raise SettingsError("'commandToExecute' is not specified")
    uris = merged.get("fileUris") or []
    if not isinstance(uris, list) or not all(isinstance(u, str) for u in uris):
        raise SettingsError("'fileUris' must be a list of strings")
    skip = bool(merged.get("skipDos2Unix", False))
    script: str | None = None
    if script_b64:
        script = _decode_script(script_b64)
    return ScriptConfig(file_uris=tuple(uris), command=command, script=script, skip_dos2unix=skip)


def _decode_script(script_b64: str) -> str:
    if len(script_b64) > MAX_SCRIPT_CHARS:
        raise SettingsError(
            f"The script's length ({len(script_b64)}) exceeded the maximum allowed length of {MAX_SCRIPT_CHARS}"
        )
    try:
        raw = base64.b64decode(script_b64, validate=True)
    except binascii.Error as exc:
        raise SettingsError(f"failed to base64 decode script: {exc}") from exc
    if raw[:2] == b"\x1f\x8b":  # scripts may be gzip'ed
        try:
            raw = gzip.decompress(raw)
        except OSError as exc:
            raise SettingsError(f"failed to decompress script: {exc}") from exc
    return raw.decode("utf-8", errors="replace")


def file_name_for(url: str) -> str:
    """The file name a fileUris entry is saved under: the last segment of the URL path."""
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path).rsplit("/", 1)[-1]
    if not name or name in {".", ".."}:
        raise FetchError(url, "cannot derive a file name from the URL")
    return name


def dos2unix(data: bytes) -> bytes:
    """Strip a UTF-8 BOM and turn CRLF into LF, for scripts only (binaries are left alone)."""
    body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    if not body.startswith(b"#!"):
        return data
    return body.replace(b"\r\n", b"\n")


# --- fetchers ---------------------------------------------------------------------------------------


def _require_loopback(url: str) -> None:
    # The twin must never reach beyond this machine: a release URL pointing elsewhere is a test bug.
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise FetchError(url, f"refusing to fetch from non-loopback host {host!r}")


def http_fetcher(timeout_s: float = 10.0) -> BlobFetcher:
    """Plain HTTP(S) GET, for public containers and local file servers (loopback hosts only)."""

    def fetch(url: str) -> bytes:
        _require_loopback(url)
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 (loopback only)
                body: bytes = resp.read()
                return body
        except urllib.error.HTTPError as exc:
            raise FetchError(url, f"http request failed with status {exc.code} {exc.reason}", exc.code) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise FetchError(url, f"http request failed: {exc}") from exc

    return fetch


def azure_blob_fetcher(connection_string: str) -> BlobFetcher:
    """Read blobs with the storage account key from ``connection_string`` (Azurite in the twin).

    This is the stand-in for the VM's managed identity: the blob URL is used as given (path-style
    Azurite URLs included), authorized with the account key instead of a token.
    """
    from azure.core.exceptions import AzureError, HttpResponseError
    from azure.storage.blob import BlobClient

    parts = dict(
        p.split("=", 1) for p in connection_string.strip().strip(";").split(";") if "=" in p
    )
    credential: dict[str, str] | None = None
    if "AccountName" in parts and "AccountKey" in parts:
        credential = {"account_name": parts["AccountName"], "account_key": parts["AccountKey"]}

    def fetch(url: str) -> bytes:
        _require_loopback(url)
        try:
            client = BlobClient.from_blob_url(url, credential=credential)
            data: bytes = client.download_blob().readall()
            return data
        except HttpResponseError as exc:
            raise FetchError(url, f"blob download failed with status {exc.status_code}: {exc.reason}",
                             exc.status_code) from exc
        except AzureError as exc:
            raise FetchError(url, f"blob download failed: {exc}") from exc

    return fetch


# --- shims ------------------------------------------------------------------------------------------

_SUDO = r"""#!/bin/sh
# sudo shim: the script already runs as root in its sandbox; drop sudo's own options, run the rest.
while [ $# -gt 0 ]; do
  case "$1" in
    -u|-g|-C|-h|-p|-U|-r|-t|-T|-D|-R) shift 2 ;;
    --) shift; break ;;
    -*) shift ;;
    *) break ;;
  esac
done
[ $# -eq 0 ] && exit 0
exec "$@"
"""

_APT = r"""#!/bin/sh
# apt-get/apt shim: no network and a read-only host, so packages are emulated. Only nginx is real:
# its stock config and page are copied from the host's Debian package files ($TWIN_NGINX_PKG).
cmd=""
pkgs=""
while [ $# -gt 0 ]; do
  case "$1" in
    -o|-c|-t|--option|--config-file|--target-release) shift 2; continue ;;
    -*) ;;
    *) if [ -z "$cmd" ]; then cmd="$1"; else pkgs="$pkgs $1"; fi ;;
  esac
  shift
done
install_nginx() {
  if [ -e /etc/nginx/nginx.conf ]; then
    echo "$1 is already the newest version (emulated)."
    return 0
  fi
  echo "Setting up $1 (emulated) ..."
  cp -R -P "$TWIN_NGINX_PKG/etc/nginx/." /etc/nginx/ || return 1
  # nginx-common's postinst: create the default page when not already present.
  if [ ! -e /var/www/html/index.nginx-debian.html ]; then
    cp "$TWIN_NGINX_PKG/html/index.nginx-debian.html" /var/www/html/index.nginx-debian.html || return 1
  fi
  echo "start nginx" >> "$TWIN_SERVICE_REQUESTS"
}
case "$cmd" in
  update)
    echo "Hit:1 http://archive.ubuntu.com/ubuntu (emulated, nothing fetched)"
    echo "Reading package lists... Done" ;;
  upgrade|dist-upgrade|full-upgrade|autoremove|clean|autoclean)
    echo "0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded. (emulated)" ;;
  install|reinstall)
    for p in $pkgs; do
      case "$p" in
        nginx|nginx-light|nginx-core|nginx-full|nginx-extras|nginx-common) install_nginx "$p" || exit 100 ;;
        *) echo "$p: not emulated on this twin; treated as installed" ;;
      esac
    done ;;
  remove|purge)
    for p in $pkgs; do
      case "$p" in
        nginx|nginx-light|nginx-core|nginx-full|nginx-extras|nginx-common)
          echo "Removing $p (emulated) ..."
          rm -rf /etc/nginx/* ;;
        *) echo "$p: not emulated on this twin; treated as removed" ;;
      esac
    done ;;
  "") echo "apt-get (emulated): no command given" >&2; exit 100 ;;
  *) echo "apt-get (emulated): $cmd is a no-op here" ;;
esac
exit 0
"""

_SYSTEMCTL = r"""#!/bin/sh
# systemctl shim: no init system in the sandbox; service requests go to a file the runtime reads.
verb=""
units=""
for a in "$@"; do
  case "$a" in
    -*) ;;
    *) if [ -z "$verb" ]; then verb="$a"; else units="$units $a"; fi ;;
  esac
done
case "$verb" in
  start|stop|restart|reload|try-restart|reload-or-restart|try-reload-or-restart|enable|disable|mask|unmask)
    for u in $units; do echo "$verb ${u%.service}" >> "$TWIN_SERVICE_REQUESTS"; done ;;
  is-active|status|is-enabled)
    if [ -e /etc/nginx/nginx.conf ]; then echo active; else echo inactive; exit 3; fi ;;
  *) ;;
esac
exit 0
"""

_SERVICE = r"""#!/bin/sh
# service shim: "service <unit> <verb>" recorded like systemctl.
[ $# -ge 2 ] && echo "$2 ${1%.service}" >> "$TWIN_SERVICE_REQUESTS"
exit 0
"""


def _write_exec(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def prepare_support_dir(base: Path) -> Path:
    """Create the shims and the nginx "package" under ``base`` (idempotent); return ``base``.

    The package is a copy of the host's Debian files, made once outside any sandbox, because inside
    the sandbox ``/etc/nginx`` is the instance's own directory and the host's is hidden.
    """
    bin_dir = base / "bin"
    pkg = base / "pkg" / "nginx"
    bin_dir.mkdir(parents=True, exist_ok=True)
    _write_exec(bin_dir / "sudo", _SUDO)
    _write_exec(bin_dir / "apt-get", _APT)
    _write_exec(bin_dir / "apt", _APT)
    _write_exec(bin_dir / "systemctl", _SYSTEMCTL)
    _write_exec(bin_dir / "service", _SERVICE)
    if not (pkg / "etc" / "nginx" / "nginx.conf").exists():
        (pkg / "html").mkdir(parents=True, exist_ok=True)
        shutil.copytree(STOCK_NGINX_CONF_DIR, pkg / "etc" / "nginx", symlinks=True, dirs_exist_ok=True)
        shutil.copyfile(STOCK_NGINX_PAGE, pkg / "html" / "index.nginx-debian.html")
    return base


def install_stock_nginx(support_dir: Path, etc_nginx: Path, www_html: Path) -> None:
    """What ``apt-get install nginx`` does to an instance, done from the outside (for images)."""
    pkg = support_dir / "pkg" / "nginx"
    shutil.copytree(pkg / "etc" / "nginx", etc_nginx, symlinks=True, dirs_exist_ok=True)
    page = www_html / "index.nginx-debian.html"
    if not page.exists():
        shutil.copyfile(pkg / "html" / "index.nginx-debian.html", page)


# --- the handler ------------------------------------------------------------------------------------


def _tail(data: bytes, limit: int) -> str:
    return data[-limit:].decode("utf-8", errors="replace")


def _result(ok: bool, detail: str, out: bytes = b"", err: bytes = b"", code: int | None = None,
            limit: int = MAX_TAIL_BYTES) -> ExtensionResult:
    stdout, stderr = _tail(out, limit), _tail(err, limit)
    head = "Enable succeeded: " if ok else f"Enable failed: {detail}"
    return ExtensionResult(
        succeeded=ok,
        exit_code=code,
        stdout=stdout,
        stderr=stderr,
        message=f"{head}\n[stdout]\n{stdout}\n[stderr]\n{stderr}",
    )


class CustomScriptHandler:
    """Runs one CustomScript ``enable`` for an instance. Stateless apart from its support dir."""

    def __init__(
        self,
        fetcher: BlobFetcher,
        support_dir: Path,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        tail_bytes: int = MAX_TAIL_BYTES,
        bwrap: str = "/usr/bin/bwrap",
        unshare_net: bool = True,
    ) -> None:
        self.fetcher = fetcher
        self.support_dir = prepare_support_dir(support_dir)
        self.timeout_s = timeout_s
        self.tail_bytes = tail_bytes
        self.bwrap = bwrap
        self.unshare_net = unshare_net

    def enable(
        self,
        settings: Mapping[str, Any],
        protected: Mapping[str, Any],
        dirs: InstanceDirs,
        download_dir: Path,
    ) -> ExtensionResult:
        """Download, run, report. Never raises for a script or settings problem: that is a result."""
        try:
            cfg = parse_settings(settings, protected)
        except SettingsError as exc:
            return _result(False, f"failed to get configuration: invalid configuration: {exc}")
        download_dir.mkdir(parents=True, exist_ok=True)
        download_dir.chmod(0o700)
        for i, url in enumerate(cfg.file_uris):
            try:
                target = download_dir / file_name_for(url)
                data = self.fetcher(url)
            except FetchError as exc:
                return _result(False, f"processing file downloads failed: failed to download file[{i}]: {exc}")
            if not cfg.skip_dos2unix:
                data = dos2unix(data)
            if target.exists():
                target.chmod(0o600)
            target.write_bytes(data)
            target.chmod(0o500)
        command = cfg.command
        if cfg.script is not None:
            script = download_dir / "script.sh"
            data = cfg.script.encode()
            script.write_bytes(data if cfg.skip_dos2unix else dos2unix(data))
            script.chmod(0o500)
            command = str(script)
        return self._run(command, dirs, download_dir)

    def sandbox_argv(self, command: str, dirs: InstanceDirs, workdir: Path) -> list[str]:
        """The bwrap command line for ``command``; public so the report and tests can show it."""
        bin_dir = self.support_dir / "bin"
        pkg = self.support_dir / "pkg" / "nginx"
        argv = [
            self.bwrap,
            "--ro-bind", "/", "/",
            "--dev", "/dev",
            "--proc", "/proc",
            "--tmpfs", "/tmp",
            # The support dir and the instance dirs may live under /tmp: bind them after the tmpfs.
            "--ro-bind", str(bin_dir), str(bin_dir),
            "--ro-bind", str(pkg), str(pkg),
            "--bind", str(dirs.etc_nginx), "/etc/nginx",
            "--bind", str(dirs.www_html), "/var/www/html",
            "--bind", str(dirs.service_requests.parent), str(dirs.service_requests.parent),
            "--bind", str(workdir), str(workdir),
            "--chdir", str(workdir),
            "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", dirs.hostname,
            "--die-with-parent", "--new-session",
            "--cap-drop", "ALL",
        ]
        if self.unshare_net:
            argv.append("--unshare-net")
        return [*argv, "/bin/sh", "-c", command]

    def _run(self, command: str, dirs: InstanceDirs, workdir: Path) -> ExtensionResult:
        env = {
            # A clean environment: nothing of the host process (tokens, keys) leaks into a script.
            "PATH": f"{self.support_dir / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "DEBIAN_FRONTEND": "noninteractive",
            "TWIN_NGINX_PKG": str(self.support_dir / "pkg" / "nginx"),
            "TWIN_SERVICE_REQUESTS": str(dirs.service_requests),
        }
        dirs.service_requests.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            self.sandbox_argv(command, dirs, workdir),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # its own process group, so a timeout kill reaches bwrap itself
        )
        try:
            out, err = proc.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            # Killing bwrap kills the sandbox: --die-with-parent and the PID namespace take the rest.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            (workdir / "stdout").write_bytes(out)
            (workdir / "stderr").write_bytes(err)
            return _result(
                False,
                f"failed to execute command: command timed out after {self.timeout_s:g} s and was killed",
                out, err, None, self.tail_bytes,
            )
        (workdir / "stdout").write_bytes(out)
        (workdir / "stderr").write_bytes(err)
        code = proc.returncode
        if code == 0:
            return _result(True, "", out, err, 0, self.tail_bytes)
        return _result(
            False,
            f"failed to execute command: command terminated with exit status={code}",
            out, err, code, self.tail_bytes,
        )

