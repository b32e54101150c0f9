"""A round-robin HTTP load balancer with a health probe: the twin's stand-in for the scale set's LB.

The walkthrough puts an Azure Load Balancer in front of the scale set: rule 80 -> 80, HTTP probe
``GET /`` on port 80. This module does the same on loopback, so ``curl http://127.0.9.1/`` during a
canary shows the old and the new page interleaved.

Design decisions:

* **Layer 7, per request.** Azure's LB is layer 4 with a 5-tuple hash; here each HTTP request picks the
  next healthy backend in turn, which makes the interleaving deterministic (and visible even through a
  keep-alive client). Responses carry ``X-Backend: <address>`` so tests and the demo can see who answered.
* **The probe decides, not the traffic.** Only probe results move a backend up or down, like Azure's:
  ``unhealthy_threshold`` consecutive failures (non-200, timeout, refused) take it out of rotation,
  ``healthy_threshold`` consecutive successes put it back. New backends start *down* and join after
  their first good probes. A request that fails on a backend still "up" gets a 502; it is not retried.
* **Backends are data or a callable.** ``set_backends([...])`` replaces the list; or pass a callable
  (the ARM emulator's current instance addresses), re-read on every probe round, so scale-out and
  scale-in show up within one probe interval.
* **Threads, all stopped by ``stop()``**: the server thread, one probe thread and a small probe pool.
"""

from __future__ import annotations

import collections
import http.client
import ipaddress
import itertools
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer

from emulator.serving import Lifecycle, QuietHandler, serve_in_background, shut_down

# Headers that describe one connection, not the message: never copied through a proxy (RFC 9110 7.6.1).
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "content-length"}
)


@dataclass
class BackendStats:
    """One backend as the balancer sees it (a snapshot; mutated only under the balancer's lock)."""

    address: str
    up: bool = False
    requests: int = 0  # requests forwarded to it
    errors: int = 0  # forwarded requests that failed at the connection level (502s)
    probes: int = 0
    consecutive_ok: int = 0
    consecutive_failed: int = 0
    last_probe: str = "not probed yet"


@dataclass(frozen=True)
class BalancerStats:
    backends: dict[str, BackendStats] = field(default_factory=dict)
    requests_total: int = 0
    no_backend: int = 0  # requests answered 503 because no backend was up

    @property
    def up(self) -> list[str]:
        return sorted(a for a, b in self.backends.items() if b.up)


def _split(backend: str, default_port: int) -> tuple[str, int]:
    host, sep, port = backend.rpartition(":")
    return (host, int(port)) if sep and port.isdigit() else (backend, default_port)


class RoundRobinBalancer(Lifecycle):
    """``start()`` / ``stop()``; ``url`` is where to send requests."""

    def __init__(
        self,
        address: str = "127.0.9.1",
        port: int = 80,
        *,
        backends: Iterable[str] | Callable[[], Iterable[str]] = (),
        backend_port: int = 80,
        probe_path: str = "/",
        probe_interval_s: float = 1.0,
        probe_timeout_s: float = 1.0,
        unhealthy_threshold: int = 2,
        healthy_threshold: int = 1,
        request_timeout_s: float = 10.0,
    ) -> None:
        if not ipaddress.ip_address(address).is_loopback:
            raise ValueError(f"the balancer listens on loopback only, got {address!r}")
        self.address = address
        self.port = port
        self.backend_port = backend_port
        self.probe_path = probe_path
        self.probe_interval_s = probe_interval_s
        self.probe_timeout_s = probe_timeout_s
        self.unhealthy_threshold = unhealthy_threshold
        self.healthy_threshold = healthy_threshold
        self.request_timeout_s = request_timeout_s
        self._source: Callable[[], Iterable[str]] | None = None
        self._static: list[str] = []
        if callable(backends):
            self._source = backends
        else:
            self._static = list(backends)
        self._lock = threading.Lock()
        self._state: dict[str, BackendStats] = {}
        self._rr = itertools.count()
        self._requests_total = 0
        self._no_backend = 0
        # Every probe result per backend address (epoch seconds, ok), for the emulator's Health Probe
        # Status metric (emulator.arm.monitor); bounded, and kept after a backend leaves the pool.
        self._probe_log: dict[str, collections.deque[tuple[float, bool]]] = {}
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._pool: ThreadPoolExecutor | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}/" if self.port != 80 else f"http://{self.address}/"

    def start(self) -> RoundRobinBalancer:
        balancer = self

        class Handler(_ProxyHandler):
            lb = balancer

        self._server = ThreadingHTTPServer((self.address, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]  # port 0 -> the one the OS picked
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="lb-probe")
        self._stop.clear()
        prober = threading.Thread(target=self._probe_loop, name=f"lb-probe-{self.address}", daemon=True)
        prober.start()
        self._threads = [serve_in_background(self._server, f"lb-{self.address}", 0.1), prober]
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            shut_down(self._server, self._threads, timeout=10)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._server, self._pool, self._threads = None, None, []

    # -- backends ------------------------------------------------------------------------------------

    def set_backends(self, backends: Iterable[str]) -> None:
        """Replace the backend list (and drop a callable source given at construction)."""
        with self._lock:
            self._source = None
            self._static = list(backends)

    def _current_backends(self) -> list[str]:
        source = self._source
        if source is not None:
            try:
                return list(dict.fromkeys(source()))
            except Exception:  # a failing source must not kill the probe loop; keep the last list
                with self._lock:
                    return list(self._state)
        with self._lock:
            return list(dict.fromkeys(self._static))

    def stats(self) -> BalancerStats:
        with self._lock:
            return BalancerStats(
                backends={a: BackendStats(**vars(b)) for a, b in self._state.items()},
                requests_total=self._requests_total,
                no_backend=self._no_backend,
            )

    def probe_history(self, start: float, end: float) -> dict[str, list[tuple[float, bool]]]:
        """Each backend's probe results (epoch seconds, ok) with ``start <= at < end``, keyed by its IP
        address (a backend given as ``address:port`` is keyed by the address, as Azure's BackendIPAddress)."""
        history: dict[str, list[tuple[float, bool]]] = {}
        with self._lock:
            for backend, log in self._probe_log.items():
                points = [p for p in log if start <= p[0] < end]
                if points:
                    history.setdefault(_split(backend, self.backend_port)[0], []).extend(points)
        return {addr: sorted(points) for addr, points in history.items()}

    def wait_until(self, predicate: Callable[[BalancerStats], bool], timeout_s: float = 10.0) -> bool:
        """Poll ``stats()`` until ``predicate`` holds (tests and the demo); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self.stats()):
                return True
            time.sleep(0.05)
        return predicate(self.stats())

    # -- probing -------------------------------------------------------------------------------------

    def _probe_loop(self) -> None:
        while not self._stop.is_set():
            self.probe_once()
            self._stop.wait(self.probe_interval_s)

    def probe_once(self) -> None:
        """One probe round over the current backends (the probe thread calls it every interval)."""
        targets = self._current_backends()
        with self._lock:
            for gone in set(self._state) - set(targets):
                del self._state[gone]
            for addr in targets:
                self._state.setdefault(addr, BackendStats(address=addr))
        pool = self._pool
        if pool is None or not targets:
            return
        try:
            results = list(pool.map(self._probe, targets))
        except RuntimeError:  # the pool was shut down under us: stop() is running
            return
        probed_at = time.time()
        with self._lock:
            for addr, (ok, _detail) in zip(targets, results, strict=True):
                self._probe_log.setdefault(addr, collections.deque(maxlen=100_000)).append((probed_at, ok))
            for addr, (ok, detail) in zip(targets, results, strict=True):
                b = self._state.get(addr)
                if b is None:
                    continue
                b.probes += 1
                b.last_probe = detail
                if ok:
                    b.consecutive_ok += 1
                    b.consecutive_failed = 0
                    if not b.up and b.consecutive_ok >= self.healthy_threshold:
                        b.up = True
                else:
                    b.consecutive_failed += 1
                    b.consecutive_ok = 0
                    if b.up and b.consecutive_failed >= self.unhealthy_threshold:
                        b.up = False

    def _probe(self, backend: str) -> tuple[bool, str]:
        host, port = _split(backend, self.backend_port)
        started = time.monotonic()
        conn = http.client.HTTPConnection(host, port, timeout=self.probe_timeout_s)
        try:
            conn.request("GET", self.probe_path, headers={"User-Agent": "Load Balancer Agent"})
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException) as exc:
            return False, f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
        ms = (time.monotonic() - started) * 1000
        # Azure's HTTP probe: only 200 is healthy.
        return resp.status == 200, f"{resp.status} in {ms:.0f} ms"

    # -- forwarding ----------------------------------------------------------------------------------

    def pick_backend(self) -> str | None:
        """The next healthy backend in round-robin order, or None when none is up."""
        with self._lock:
            self._requests_total += 1
            up = [a for a, b in self._state.items() if b.up]
            if not up:
                self._no_backend += 1
                return None
            choice = up[next(self._rr) % len(up)]
            self._state[choice].requests += 1
            return choice

    def _record_error(self, backend: str) -> None:
        with self._lock:
            if backend in self._state:
                self._state[backend].errors += 1


class _ProxyHandler(QuietHandler):  # quiet: tests and the demo read stats(), not an access log
    lb: RoundRobinBalancer
    server_version = "twin-lb"
    timeout = 5  # an idle keep-alive client must not hold a handler thread past stop() for long

    def _forward(self) -> None:
        backend = self.lb.pick_backend()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if backend is None:
            self.reply(503, b"no healthy backend\n", {})
            return
        host, port = _split(backend, self.lb.backend_port)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["X-Forwarded-For"] = self.client_address[0]
        conn = http.client.HTTPConnection(host, port, timeout=self.lb.request_timeout_s)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.lb._record_error(backend)
            self.reply(502, f"backend {backend} failed: {exc}\n".encode(), {"X-Backend": backend})
            return
        finally:
            conn.close()
        out = {k: v for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP}
        out["X-Backend"] = backend
        if self.command == "HEAD":  # no body came back; tell the client the length the GET would have
            self.reply(resp.status, b"", out, length=int(resp.getheader("Content-Length") or 0))
        else:
            self.reply(resp.status, data, out)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _forward
