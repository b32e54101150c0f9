"""Faults and throttling budgets: the two ways the emulator refuses a request on purpose.

* ``FaultTable``: faults armed through ``inject_fault`` (the next N requests matching a method and a
  path regex answer a given status), each an ``ArmedFault`` that counts down its remaining uses.
* ``Throttle``: a ``TokenBucket`` per scale set over model/upgrade writes (PUT/PATCH of the scale set
  or its extensions, manualupgrade, reimage), answering 429 ``OperationNotAllowed`` with
  ``Retry-After``, like Compute's "too many requests" for a scale set.

Neither takes a lock of its own: the caller holds the fleet's lock (``fleet.Fleet.lock``).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field

from emulator.arm.model import JSON, ArmError


@dataclass
class TokenBucket:
    capacity: float = 12.0
    per_minute: float = 4.0
    tokens: float = 12.0
    stamp: float = field(default_factory=time.monotonic)

    def take(self) -> float:
        """Take one token; return 0 on success, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.per_minute / 60.0)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) * 60.0 / self.per_minute


@dataclass(frozen=True)
class Throttle:
    """The budget every scale set gets: a bucket of ``capacity`` tokens refilled ``per_minute``."""

    capacity: float = 12.0
    per_minute: float = 4.0

    def new_bucket(self) -> TokenBucket:
        return TokenBucket(capacity=self.capacity, per_minute=self.per_minute, tokens=self.capacity)

    def as_tuple(self) -> tuple[float, float]:
        return (self.capacity, self.per_minute)

    def spend(self, bucket: TokenBucket | None) -> None:
        """Take a token from ``bucket`` (None: unthrottled) or raise 429 with ``Retry-After``."""
        wait = bucket.take() if bucket is not None else 0.0
        if wait > 0:
            raise ArmError(
                429,
                "OperationNotAllowed",
                "The number of requests for this scale set's model/upgrade operations exceeded the "
                f"allowed limit (bucket {self.as_tuple()}). Retry after {math.ceil(wait)} seconds.",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )


@dataclass(frozen=True)
class Fault:
    method: str  # "*" for any
    path_regex: str
    status: int
    body: JSON | None
    headers: dict[str, str]

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method.upper()) and re.search(self.path_regex, path) is not None

    def error(self) -> ArmError:
        headers = dict(self.headers)
        if self.status == 429 and "Retry-After" not in headers:
            headers["Retry-After"] = "1"
        return ArmError(self.status, "Fault", "injected fault", headers, body=self.body)


@dataclass
class ArmedFault:
    fault: Fault
    remaining: int


class FaultTable:
    """The armed faults, oldest first; a fault is dropped once it has answered ``count`` requests."""

    def __init__(self) -> None:
        self._armed: list[ArmedFault] = []

    def arm(self, fault: Fault, count: int) -> None:
        self._armed.append(ArmedFault(fault, count))

    def clear(self) -> None:
        self._armed.clear()

    def check(self, method: str, path: str) -> None:
        """Raise the first armed fault matching the request (using it up once), if any."""
        for armed in self._armed:
            if armed.remaining > 0 and armed.fault.matches(method, path):
                armed.remaining -= 1
                self._armed = [a for a in self._armed if a.remaining > 0]
                raise armed.fault.error()

    def as_json(self) -> list[JSON]:
        return [
            {
                "method": a.fault.method,
                "path_regex": a.fault.path_regex,
                "status": a.fault.status,
                "remaining": a.remaining,
            }
            for a in self._armed
        ]


def injected_fault(
    method: str, path_regex: str, status: int, body: JSON | None, headers: dict[str, str] | None
) -> Fault:
    """A fault as ``inject_fault`` arms it: a default ARM error body for the status when none is given."""
    re.compile(path_regex)
    if body is None:
        code = {429: "TooManyRequests", 409: "Conflict", 500: "InternalServerError"}.get(status, "Fault")
        body = {"error": {"code": code, "message": f"Injected fault {status} (emulator)."}}
    return Fault(method.upper(), path_regex, status, body, dict(headers or {}))
