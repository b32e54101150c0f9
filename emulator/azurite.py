"""Azurite (blobs, queues, tables) as a managed child process: for the tests and the demo.

- **Free ports without a race.** Azurite accepts ``--blobPort 0`` (and queue/table) and prints the
  port the OS picked; we read it back from its log and wait until every port accepts a connection.
- **Output goes to a file, not a pipe** (a pipe nobody drains blocks the server).
- **In-memory persistence, temporary workspace** (Azurite 3.37 refuses ``--inMemoryPersistence``
  with ``--location``, so the workspace is the working directory).
- **Nothing is left running.** Its own process group; SIGTERM then SIGKILL on exit;
  ``PR_SET_PDEATHSIG`` makes the kernel kill it if we die without cleaning up. No telemetry.
- ``oauth=True`` serves HTTPS with a throw-away certificate and ``--oauth basic``, so the
  managed-identity code paths can run against it.
- ``on_disk=True`` keeps the data in the temporary workspace instead of memory (``--location``), for
  blobs too large for memory (a 1 GB release in the size test); the workspace is deleted on exit.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
AZURITE_BIN = REPO_ROOT / ".tools" / "node_modules" / ".bin" / "azurite"

# The well-known development account of the storage emulators (public, documented by Microsoft).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

STARTUP_TIMEOUT_S = 30.0
STOP_GRACE_S = 5.0
_LISTENING_RE = re.compile(
    r"Azurite (?P<service>Blob|Queue|Table) service is successfully listening at "
    r"(?P<url>https?://[^\s]+)"
)


@dataclass(frozen=True)
class AzuriteService:
    """A running Azurite: endpoints include the account path, as the SDKs expect for the emulator."""

    blob_endpoint: str
    queue_endpoint: str
    table_endpoint: str
    account_name: str
    account_key: str
    pid: int
    workspace: Path
    ca_file: Path | None = None  # set when serving HTTPS: the certificate to trust (connection_verify)

    @property
    def connection_string(self) -> str:
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={self.account_name};AccountKey={self.account_key};"
            f"BlobEndpoint={self.blob_endpoint};"
            f"QueueEndpoint={self.queue_endpoint};"
            f"TableEndpoint={self.table_endpoint};"
        )


def _pdeathsig() -> None:
    """Runs in the child before exec: die with the parent (Linux only; elsewhere a no-op)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _wait_for_endpoints(proc: subprocess.Popen[bytes], log_path: Path) -> dict[str, str]:
    """Poll the log until all three services report their port, then until each port connects."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    urls: dict[str, str] = {}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Azurite exited with code {proc.returncode} during start-up:\n{_tail(log_path)}")
        urls = {m["service"]: m["url"] for m in _LISTENING_RE.finditer(log_path.read_text(errors="replace"))}
        if len(urls) == 3:
            break
        time.sleep(0.05)
    else:
        raise RuntimeError(f"Azurite did not report its ports in {STARTUP_TIMEOUT_S}s:\n{_tail(log_path)}")

    for url in urls.values():
        host, port = url.split("://", 1)[1].rstrip("/").rsplit(":", 1)
        while True:
            try:
                with socket.create_connection((host, int(port)), timeout=1.0):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Azurite port {url} never accepted a connection") from None
                time.sleep(0.05)
    return urls


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, then SIGKILL it if it has not gone within the grace period."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_GRACE_S)


@contextlib.contextmanager
def run_azurite(oauth: bool = False, on_disk: bool = False) -> Iterator[AzuriteService]:
    """Start Azurite on free loopback ports; stop it (and its children) on exit, whatever happened.

    ``oauth=True`` serves HTTPS with a throw-away self-signed certificate (``ca_file``) and accepts
    bearer tokens (``--oauth basic``), which is how the managed-identity code paths are exercised:
    the SDKs refuse to send a bearer token over plain HTTP. Usable outside pytest too."""
    if not AZURITE_BIN.exists():
        raise RuntimeError(f"Azurite not found at {AZURITE_BIN}: run `make setup`")
    with tempfile.TemporaryDirectory(prefix="azurite-") as tmp:
        workspace = Path(tmp)
        log_path = workspace / "azurite.log"
        tls_args: list[str] = []
        ca_file: Path | None = None
        if oauth:
            from emulator.certs import generate_certs  # cryptography: only when serving HTTPS

            # A throw-away CA and a server certificate for 127.0.0.1, as the ARM emulator uses.
            certs = generate_certs(workspace / "certs", hosts=("127.0.0.1",))
            ca_file = certs.ca_bundle
            tls_args = ["--cert", str(certs.cert_chain), "--key", str(certs.key), "--oauth", "basic"]
        persistence = (
            ["--location", str(workspace / "data")]
            if on_disk
            else ["--inMemoryPersistence", "--extentMemoryLimit", "512"]
        )
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [
                    str(AZURITE_BIN),
                    "--blobHost",
                    "127.0.0.1",
                    "--blobPort",
                    "0",
                    "--queueHost",
                    "127.0.0.1",
                    "--queuePort",
                    "0",
                    "--tableHost",
                    "127.0.0.1",
                    "--tablePort",
                    "0",
                    *persistence,
                    "--silent",
                    "--skipApiVersionCheck",
                    "--loose",
                    "--disableTelemetry",
                    *tls_args,
                ],
                cwd=workspace,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_pdeathsig,  # noqa: PLW1509 - no threads exist in the child yet
            )
        try:
            urls = _wait_for_endpoints(proc, log_path)
            yield AzuriteService(
                blob_endpoint=f"{urls['Blob'].rstrip('/')}/{ACCOUNT_NAME}",
                queue_endpoint=f"{urls['Queue'].rstrip('/')}/{ACCOUNT_NAME}",
                table_endpoint=f"{urls['Table'].rstrip('/')}/{ACCOUNT_NAME}",
                account_name=ACCOUNT_NAME,
                account_key=ACCOUNT_KEY,
                pid=proc.pid,
                workspace=workspace,
                ca_file=ca_file,
            )
        finally:
            _stop(proc)
