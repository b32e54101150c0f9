"""The CustomScript handler against the real sandbox (bwrap), real files and real local servers.

No nginx here: these tests look at what a release script can and cannot do, and at what the handler
reports. The fetcher in most tests is a dict lookup: it is the handler's injection seam (the VM's
network), not a mock of anything the handler does itself; the stock fetchers get their own tests
against a real HTTP server and a real Azurite.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import http.server
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.customscript import (
    MAX_TAIL_BYTES,
    CustomScriptHandler,
    FetchError,
    InstanceDirs,
    SettingsError,
    azure_blob_fetcher,
    http_fetcher,
    parse_settings,
)

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BASE = "http://127.0.0.1:9/init/"  # never contacted: the dict fetcher answers


class DictFetcher:
    """Serves fixed blobs; raises a 404 FetchError for anything else, and records what was asked."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs
        self.asked: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.asked.append(url)
        if url not in self.blobs:
            raise FetchError(url, "http request failed with status 404 The specified blob does not exist.", 404)
        return self.blobs[url]


@pytest.fixture(scope="module")
def support_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cs-support")


@pytest.fixture
def dirs(tmp_path: Path) -> InstanceDirs:
    for d in ("etc-nginx", "www-html", "svc"):
        (tmp_path / d).mkdir()
    return InstanceDirs(tmp_path / "etc-nginx", tmp_path / "www-html", tmp_path / "svc" / "requests")


def _handler(support_dir: Path, blobs: dict[str, bytes] | None = None, **kw: float) -> CustomScriptHandler:
    return CustomScriptHandler(DictFetcher(blobs or {}), support_dir, **kw)  # type: ignore[arg-type]


def _examples() -> dict[str, bytes]:
    return {BASE + p.name: p.read_bytes() for p in EXAMPLES.glob("*.sh")}


def _alive_with(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


# --- settings -----------------------------------------------------------------------------------------


def test_a_key_in_both_public_and_protected_settings_is_rejected() -> None:
    with pytest.raises(SettingsError, match="'commandToExecute' was specified both in public and protected"):
        parse_settings({"commandToExecute": "a"}, {"commandToExecute": "b"})


def test_command_and_script_together_or_neither_are_rejected() -> None:
    with pytest.raises(SettingsError, match="both specified"):
        parse_settings({"commandToExecute": "a", "script": base64.b64encode(b"x").decode()}, {})
    with pytest.raises(SettingsError, match="'commandToExecute' is not specified"):
        parse_settings({"fileUris": []}, {})


def test_protected_settings_are_merged_with_public_ones() -> None:
    cfg = parse_settings({"fileUris": ["http://127.0.0.1/a.sh"]}, {"commandToExecute": "./a.sh"})
    assert cfg.file_uris == ("http://127.0.0.1/a.sh",) and cfg.command == "./a.sh"


def test_invalid_settings_are_a_failed_extension_not_an_exception(
    support_dir: Path, dirs: InstanceDirs, tmp_path: Path
) -> None:
    result = _handler(support_dir).enable({"commandToExecute": "x"}, {"commandToExecute": "y"}, dirs, tmp_path / "dl")
    assert not result.succeeded
    assert result.message.startswith("Enable failed: failed to get configuration: invalid configuration")


# --- the walkthrough's scripts ------------------------------------------------------------------------


def test_walkthrough_v0_then_v1_install_nginx_and_edit_the_debian_page(
    support_dir: Path, dirs: InstanceDirs, tmp_path: Path
) -> None:
    handler = _handler(support_dir, _examples())
    v0 = handler.enable(
        {"fileUris": [BASE + "install_nginx.sh"], "commandToExecute": "./install_nginx.sh"},
        {},
        dirs,
        tmp_path / "dl" / "0",
    )
    assert v0.succeeded, v0.message
    assert v0.exit_code == 0
    assert (dirs.etc_nginx / "nginx.conf").is_file()
    assert (dirs.etc_nginx / "sites-enabled" / "default").is_symlink()
    page = dirs.www_html / "index.nginx-debian.html"
    assert "<title>Welcome to nginx!</title>" in page.read_text()
    assert "start nginx" in dirs.service_requests.read_text()
    assert (tmp_path / "dl" / "0" / "install_nginx.sh").stat().st_mode & 0o777 == 0o500

    v1 = handler.enable(
        {"fileUris": [BASE + "install_nginx.v1.sh"], "commandToExecute": "./install_nginx.v1.sh"},
        {},
        dirs,
        tmp_path / "dl" / "1",
    )
    assert v1.succeeded, v1.message
    assert "<title>Welcome to nginx on Azure VMSS!</title>" in page.read_text()
    assert "already the newest version" in v1.stdout
    assert v1.message.startswith("Enable succeeded: \n[stdout]\n")


def test_inline_gzipped_script_runs_from_script_sh(support_dir: Path, dirs: InstanceDirs, tmp_path: Path) -> None:
    script = base64.b64encode(gzip.compress(b"#!/bin/sh\necho inline > /var/www/html/inline.txt\n")).decode()
    result = _handler(support_dir).enable({}, {"script": script}, dirs, tmp_path / "dl")
    assert result.succeeded, result.message
    assert (dirs.www_html / "inline.txt").read_text() == "inline\n"
    assert (tmp_path / "dl" / "script.sh").exists()


def test_crlf_and_bom_scripts_are_cleaned_like_the_real_handler(
    support_dir: Path, dirs: InstanceDirs, tmp_path: Path
) -> None:
    blobs = {BASE + "dos.sh": b"\xef\xbb\xbf#!/bin/sh\r\necho dos-ok\r\n"}
    result = _handler(support_dir, blobs).enable(
        {"fileUris": [BASE + "dos.sh"], "commandToExecute": "./dos.sh"}, {}, dirs, tmp_path / "dl"
    )
    assert result.succeeded, result.message
    assert result.stdout == "dos-ok\n"


# --- the sandbox ----------------------------------------------------------------------------------------


def test_the_host_is_read_only_outside_the_instance_dirs(support_dir: Path, dirs: InstanceDirs, tmp_path: Path) -> None:
    evil = f"/etc/evil-{uuid.uuid4().hex[:8]}"
    result = _handler(support_dir).enable({"commandToExecute": f"touch {evil}"}, {}, dirs, tmp_path / "dl")
    assert not result.succeeded
    assert result.exit_code != 0
    assert "Read-only file system" in result.stderr
    assert not Path(evil).exists()


def test_even_root_cannot_remount_the_host_writable(support_dir: Path, dirs: InstanceDirs, tmp_path: Path) -> None:
    target = f"/var/evil-{uuid.uuid4().hex[:8]}"
    result = _handler(support_dir).enable(
        {"commandToExecute": f"mount -o remount,rw / ; touch {target}"}, {}, dirs, tmp_path / "dl"
    )
    assert not result.succeeded
    assert not Path(target).exists()


def test_tmp_is_private_to_the_script(support_dir: Path, dirs: InstanceDirs, tmp_path: Path) -> None:
    name = f"/tmp/cs-private-{uuid.uuid4().hex[:8]}"
    result = _handler(support_dir).enable(
        {"commandToExecute": f"echo x > {name} && cat {name}"}, {}, dirs, tmp_path / "dl"
    )
    assert result.succeeded and result.stdout == "x\n"
    assert not Path(name).exists()


def test_no_network_inside_the_sandbox(support_dir: Path, dirs: InstanceDirs, tmp_path: Path) -> None:
    accepted: list[object] = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.5)
        port = server.getsockname()[1]
        cmd = f"python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), timeout=2)'"
        result = _handler(support_dir).enable({"commandToExecute": cmd}, {}, dirs, tmp_path / "dl")
        with contextlib.suppress(TimeoutError):
            accepted.append(server.accept())
    assert not result.succeeded
    assert "Connection refused" in result.stderr  # the sandbox's own, empty loopback
    assert accepted == []


def test_exit_code_stdout_and_stderr_are_captured_with_the_tail_kept(
    support_dir: Path, dirs: InstanceDirs, tmp_path: Path
) -> None:
    cmd = "i=0; while [ $i -lt 1000 ]; do echo line-$i; i=$((i+1)); done; echo oops >&2; exit 7"
    result = _handler(support_dir).enable({"commandToExecute": cmd}, {}, dirs, tmp_path / "dl")
    assert not result.succeeded
    assert result.exit_code == 7
    assert len(result.stdout.encode()) == MAX_TAIL_BYTES
    assert result.stdout.endswith("line-999\n") and "line-0\n" not in result.stdout
    assert result.stderr == "oops\n"
    assert "command terminated with exit status=7" in result.message
    assert result.message.endswith("\n[stderr]\noops\n")
    assert (tmp_path / "dl" / "stdout").read_text().startswith("line-0\n")  # the full log stays on disk


def test_the_time_limit_kills_the_script_and_everything_it_started(
    support_dir: Path, dirs: InstanceDirs, tmp_path: Path
) -> None:
    marker = f"31.{uuid.uuid4().int % 10**6}"  # a unique sleep argument to find its processes by
    handler = _handler(support_dir, timeout_s=1.0)
    started = time.monotonic()
    result = handler.enable(
        {"commandToExecute": f"echo started; sleep {marker} & sleep {marker}"}, {}, dirs, tmp_path / "dl"
    )
    assert time.monotonic() - started < 5
    assert not result.succeeded and result.exit_code is None
    assert "timed out after 1 s" in result.message
    assert result.stdout == "started\n"
    deadline = time.monotonic() + 3
    while _alive_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _alive_with(marker) == []


def test_processes_left_behind_by_a_finished_script_die_with_it(
    support_dir: Path, dirs: InstanceDirs, tmp_path: Path
) -> None:
    marker = f"32.{uuid.uuid4().int % 10**6}"
    result = _handler(support_dir).enable(
        {"commandToExecute": f"(sleep {marker} &) ; echo ok"}, {}, dirs, tmp_path / "dl"
    )
    assert result.succeeded
    time.sleep(0.2)
    assert _alive_with(marker) == []


def test_a_missing_file_fails_the_extension_before_anything_runs(
    support_dir: Path, dirs: InstanceDirs, tmp_path: Path
) -> None:
    result = _handler(support_dir).enable(
        {"fileUris": [BASE + "install_nginx.v9.sh"], "commandToExecute": "touch /var/www/html/ran"},
        {},
        dirs,
        tmp_path / "dl",
    )
    assert not result.succeeded and result.exit_code is None
    assert "failed to download file[0]" in result.message and "404" in result.message
    assert not (dirs.www_html / "ran").exists()


# --- the stock fetchers against real servers ------------------------------------------------------------


@pytest.fixture(scope="module")
def examples_server() -> Iterator[str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(EXAMPLES), **kw)  # type: ignore[arg-type]

        def log_message(self, *a: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_http_fetcher_downloads_and_reports_404(examples_server: str) -> None:
    fetch = http_fetcher()
    assert fetch(examples_server + "install_nginx.sh") == (EXAMPLES / "install_nginx.sh").read_bytes()
    with pytest.raises(FetchError) as err:
        fetch(examples_server + "nope.sh")
    assert err.value.status == 404


def test_fetchers_refuse_non_loopback_hosts() -> None:
    with pytest.raises(FetchError, match="non-loopback"):
        http_fetcher()("http://example.com/install_nginx.sh")


def test_azure_blob_fetcher_reads_a_private_blob_from_azurite(azurite: object, azurite_names: object) -> None:
    from azure.storage.blob import BlobServiceClient

    conn: str = azurite.connection_string  # type: ignore[attr-defined]
    container = azurite_names.container  # type: ignore[attr-defined]
    service = BlobServiceClient.from_connection_string(conn)
    service.create_container(container)  # private: an anonymous GET would be refused
    data = (EXAMPLES / "install_nginx.v1.sh").read_bytes()
    blob = service.get_blob_client(container, "install_nginx.v1.sh")
    blob.upload_blob(data)

    fetch = azure_blob_fetcher(conn)
    assert fetch(blob.url) == data
    with pytest.raises(FetchError) as err:
        fetch(blob.url.replace("install_nginx.v1.sh", "install_nginx.v2.sh"))
    assert err.value.status == 404
    with pytest.raises(FetchError):
        http_fetcher()(blob.url)  # the container is private: no key, no blob
