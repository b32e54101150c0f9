"""An SDK client made at its first use, so that importing an adapter does not import its SDK: a process that
only serves reads from the state store never loads the compute, network or monitor SDKs
(tests/integration/test_cold_start.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class _Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=_Closable)


class LazyClient(Generic[C]):
    """``make()`` on the first ``get()``, once even when two threads ask at once; ``close`` closes the client
    if it was made."""

    def __init__(self, make: Callable[[], C]) -> None:
        self._make = make
        self._client: C | None = None
        self._lock = threading.Lock()

    def get(self) -> C:
        with self._lock:
            if self._client is None:
                self._client = self._make()
            return self._client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
