"""Faults and throttling budgets: the two ways the emulator refuses a request on purpose.

* ``FaultTable``: faults armed through ``inject_fault`` (the next N requests matching a method and a
  path regex answer a given status), each an ``ArmedFault`` that counts down its remaining uses.
* ``Throttle``: a ``TokenBucket`` per scale set over model/upgrade writes (PUT/PATCH of the scale set
  or its extensions, manualupgrade, reimage), answering 429 ``OperationNotAllowed`` with
  ``Retry-After``, like Compute's "too many requests" for a scale set.
* ``ReadLimit`` / ``ReadBuckets``: ARM's subscription read bucket, one ``TokenBucket`` per subscription
  and region over every GET, answering 429 ``SubscriptionRequestsThrottled`` with ``Retry-After`` and
  reporting ``x-ms-ratelimit-remaining-subscription-reads`` on every read it lets through.

Neither takes a lock of its own: the caller holds the fleet's lock (``fleet.Fleet.lock``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from emulator.arm.model import JSON, ArmError


@dataclass
class TokenBucket:
    """Refilled by ``clock`` (seconds, monotonic): real time, or the emulator's clock (``emulator/clock.py``)."""

    capacity: float = 12.0
    per_minute: float = 4.0
    tokens: float = 12.0
    clock: Callable[[], float] = time.monotonic
    stamp: float = field(default=-1.0)

    def __post_init__(self) -> None:
        if self.stamp < 0:
            self.stamp = self.clock()

    def take(self) -> float:
        """Take one token; return 0 on success, else the seconds until one is available."""
        now = self.clock()
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

    def new_bucket(self, clock: Callable[[], float] = time.monotonic) -> TokenBucket:
        return TokenBucket(capacity=self.capacity, per_minute=self.per_minute, tokens=self.capacity, clock=clock)

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


# ARM's throttling since 2024 (learn.microsoft.com/azure/azure-resource-manager/management/
# request-limits-and-throttling, "Regional throttling and token bucket algorithm"): "Throttling limits are
# now applied per region rather than per instance of Azure Resource Manager. This new architecture uses
# a token bucket algorithm"; Subscription | reads | bucket size 250 | refill rate per sec 25 (writes and
# deletes 200 / 10); "Subscription limits apply per subscription, per service principal, and per
# operation type". Read answers carry the header below ("Subscription scoped reads remaining. This value
# is returned on read operations.", same page, "Remaining requests"); an exceeded bucket answers 429 with
# Retry-After ("Error code"). The error code is ARM's SubscriptionRequestsThrottled (as quoted in
# MicrosoftDocs/azure-docs issue 105248). The emulator has one caller (one token), hence one principal.
# Compute's own troubleshooting page (learn.microsoft.com/troubleshoot/azure/virtual-machines/
# troubleshooting-throttling-errors) says the same split: "inspect the x-ms-ratelimit-remaining-subscription-reads
# for GET requests ... If the remaining call count is approaching 0, the subscription's general call limit
# defined by Azure Resource Manager has been reached. ... Otherwise, the throttling is coming from the target
# resource provider"; Compute's provider policies (x-ms-ratelimit-remaining-resource, e.g.
# "Microsoft.Compute/HighCostGet3Min;159") are shown by example only, their limits are not published, and
# the emulator does not model them (the per-scale-set write bucket above stands in for its write limits).
READS_REMAINING_HEADER = "x-ms-ratelimit-remaining-subscription-reads"
ARM_SUBSCRIPTION_READS_BUCKET = 250.0
ARM_SUBSCRIPTION_READS_PER_SECOND = 25.0


@dataclass(frozen=True)
class ReadLimit:
    """The subscription read budget: ``capacity`` tokens, refilled ``per_second``."""

    capacity: float = ARM_SUBSCRIPTION_READS_BUCKET
    per_second: float = ARM_SUBSCRIPTION_READS_PER_SECOND

    def as_tuple(self) -> tuple[float, float]:
        return (self.capacity, self.per_second)


class ReadBuckets:
    """One read bucket per (subscription, region), created full on first use. The caller holds the lock."""

    def __init__(self, limit: ReadLimit | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock  # refills by it (real time, or the emulator's clock)
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self.throttled = 0  # reads answered 429 so far (benchmarks, tests)

    def reset(self, limit: ReadLimit | None) -> None:
        self.limit = limit
        self._buckets.clear()
        self.throttled = 0

    def spend(self, subscription: str, region: str) -> int | None:
        """Take a token for one read: the reads left (whole), or None when unlimited; 429 when empty."""
        if self.limit is None:
            return None
        key = (subscription.lower(), region.lower())
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(
                capacity=self.limit.capacity,
                per_minute=self.limit.per_second * 60.0,
                tokens=self.limit.capacity,
                clock=self._clock,
            )
            self._buckets[key] = bucket
        wait = bucket.take()
        if wait > 0:
            self.throttled += 1
            raise ArmError(
                429,
                "SubscriptionRequestsThrottled",
                f"Number of 'read' requests for subscription '{subscription}' exceeded the limit of the region "
                f"'{region}' (bucket {self.limit.as_tuple()}). Please try again after '{math.ceil(wait)}' seconds.",
                {"Retry-After": str(max(1, math.ceil(wait))), READS_REMAINING_HEADER: "0"},
            )
        return int(bucket.tokens)
