"""The request log: every ARM request the emulator answered (admin requests are not logged)."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from emulator.arm.model import JSON

MAX_LOG = 100_000  # request log entries kept (oldest tenth dropped beyond it)


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: dict[str, str]
    body: Any  # parsed JSON (protectedSettings redacted) or None
    status: int
    time: datetime

    def to_json(self) -> JSON:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "body": self.body,
            "status": self.status,
            "time": self.time.isoformat(),
        }


def redact(body: Any) -> Any:
    """Keep protectedSettings out of the log (they can hold secrets); keep the fact they were sent."""
    if isinstance(body, dict):
        return {k: ("<redacted>" if k == "protectedSettings" else redact(v)) for k, v in body.items()}
    if isinstance(body, list):
        return [redact(v) for v in body]
    return body


class RequestLog:
    """Oldest first, bounded by ``MAX_LOG``; shares the fleet's lock."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._records: list[RequestRecord] = []

    def append(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)
            if len(self._records) > MAX_LOG:  # a long demo must not grow without bound
                del self._records[: MAX_LOG // 10]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def select(
        self, method: str | None, path_contains: str | None, path_regex: str | None, include_polls: bool
    ) -> list[RequestRecord]:
        """Filtered by method, substring (case-insensitive) or regex of the path; operation polls only
        with ``include_polls``."""
        with self._lock:
            records = list(self._records)
        out = []
        for r in records:
            if method and r.method != method.upper():
                continue
            if path_contains and path_contains.lower() not in r.path.lower():
                continue
            if path_regex and not re.search(path_regex, r.path, re.IGNORECASE):
                continue
            if not include_polls and "/operations/" in r.path.lower():
                continue
            out.append(r)
        return out
