"""Real traffic for the canary judge's signals: a bounded load generator, and a slow upstream.

``LoadGenerator(targets, ...)`` sends ``GET path`` to every address ``targets()`` returns (called again
every ``refresh_s``, so a replaced or added instance gets traffic), ``workers`` threads per address, each
one request at a time and at most one every ``interval_s`` (it waits out the rest of the interval after an
answer). Bounded: at most ``workers`` requests in flight per address and ``workers / interval_s`` a second,
whatever the instances do, so an instance that fails fast gets no more traffic than a healthy one, as
behind a balancer. It counts the answers per status (``counts()``); the
figures the judge sees come from the instances' own records (nginx's access log, a synthetic
instance's request log), not from here.

``slow_upstream(address, port, seed=...)`` runs an HTTP server that answers ``GET /delay/<ms>`` after a pause
drawn from a log-normal distribution with that median (sigma ``sigma``, seeded): the application an nginx
release proxies to, so a release can be slower than its baseline by a known factor with a realistic
spread (``proxy_pass http://<address>:<port>/delay/200;``). nginx's ``$request_time`` then measures it.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_DELAY = re.compile(r"^/delay/(?P<ms>\d+(?:\.\d+)?)$")


class LoadGenerator:
    """``workers`` threads per target address, each sending ``GET path`` one at a time."""

    def __init__(
        self,
        targets: Callable[[], list[str]],
        *,
        port: int = 80,
        path: str = "/",
        workers: int = 2,
        interval_s: float = 0.1,
        timeout_s: float = 3.0,
        refresh_s: float = 0.5,
    ) -> None:
        if workers < 1 or workers > 16:
            raise ValueError(f"workers must be between 1 and 16, not {workers}")
        if not 0.001 <= interval_s <= 60:
            raise ValueError(f"interval_s must be between 0.001 and 60, not {interval_s}")
        self._targets = targets
        self.port = port
        self.path = path
        self.workers = workers
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.refresh_s = refresh_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()
        self._threads: dict[str, list[threading.Thread]] = {}
        self._manager: threading.Thread | None = None

    def start(self) -> LoadGenerator:
        self._stop.clear()
        self._manager = threading.Thread(target=self._manage, name="load-manager", daemon=True)
        self._manager.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._manager is not None:
            self._manager.join(timeout=5)
        for threads in list(self._threads.values()):
            for thread in threads:
                thread.join(timeout=self.timeout_s + 1)
        self._threads.clear()

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def counts(self) -> dict[str, int]:
        """Answers so far by status (``"200"``, ``"500"``, ``"error"`` for no answer)."""
        with self._lock:
            return dict(self._counts)

    def _manage(self) -> None:
        while not self._stop.is_set():
            try:
                wanted = set(self._targets())
            except Exception:  # noqa: BLE001 - a target list that failed once is asked again
                wanted = set()
            for address in wanted - set(self._threads):
                self._threads[address] = [
                    threading.Thread(target=self._work, args=(address,), name=f"load-{address}-{n}", daemon=True)
                    for n in range(self.workers)
                ]
                for thread in self._threads[address]:
                    thread.start()
            self._stop.wait(self.refresh_s)

    def _work(self, address: str) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(address, self.port, timeout=self.timeout_s)
                conn.request("GET", self.path, headers={"User-Agent": "vmss-canary-load"})
                response = conn.getresponse()
                response.read()
                outcome = str(response.status)
                if response.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                outcome = "error"
                if conn is not None:
                    conn.close()
                conn = None
            with self._lock:
                self._counts[outcome] += 1
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - began)))
        if conn is not None:
            conn.close()


class _DelayHandler(BaseHTTPRequestHandler):
    server: _DelayServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        m = _DELAY.match(self.path.split("?", 1)[0])
        if m is None:
            body, status = b"not found\n", 404
        else:
            time.sleep(self.server.draw(float(m["ms"])) / 1000.0)
            body, status = b"ok\n", 200
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass


class _DelayServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], seed: int, sigma: float) -> None:
        super().__init__(address, _DelayHandler)
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.sigma = sigma

    def draw(self, median_ms: float) -> float:
        with self._lock:
            return median_ms * math.exp(self._random.gauss(0.0, self.sigma))


@contextlib.contextmanager
def slow_upstream(address: str, port: int, *, seed: int = 0, sigma: float = 0.15) -> Iterator[str]:
    """Serve ``GET /delay/<ms>`` on ``address:port`` until the block ends; yields its URL."""
    server = _DelayServer((address, port), seed, sigma)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    try:
        yield f"http://{address}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
