"""Route tables: (method, path pattern) -> handler, for the ARM API and the admin API.

A table is a list read top to bottom; the first route whose method matches ("*": any) and whose
pattern matches the whole path (case-insensitively, as ARM treats paths) handles the request.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from emulator.arm.model import ArmError

# (status, headers, JSON body or None)
Answer = tuple[int, dict[str, str], Any]


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any  # parsed JSON or None

    def json_body(self) -> dict[str, Any]:
        return self.body or {}


H = TypeVar("H")


@dataclass(frozen=True)
class Route(Generic[H]):
    method: str  # "*" for any
    pattern: re.Pattern[str]
    handler: H


class RouteTable(Generic[H]):
    def __init__(self) -> None:
        self._routes: list[Route[H]] = []

    def add(self, method: str, pattern: str, handler: H) -> RouteTable[H]:
        self._routes.append(Route(method, re.compile(f"^{pattern}$", re.IGNORECASE), handler))
        return self

    def find(self, method: str, path: str) -> tuple[H, re.Match[str]] | None:
        for route in self._routes:
            m = route.pattern.match(path)
            if m is not None and route.method in ("*", method):
                return route.handler, m
        return None

    def routes(self) -> list[tuple[str, str]]:
        """(method, pattern) of every route, in order: what a reader lists to see the API."""
        return [(r.method, r.pattern.pattern) for r in self._routes]


def no_route(method: str, path: str, where: str = "in the ARM emulator") -> ArmError:
    return ArmError(404, "NotFound", f"No route for {method} {path} {where}.")


TopHandler = Callable[[Request, re.Match[str]], Answer]
