"""HTTP route templates: what the product's routes use, and nothing more.

``function_app.py``'s routes are literal segments and whole-segment ``{name}`` parameters
(``rollouts``, ``rollouts/{id}``, ``rollouts/{id}/{verb}``, ``fleet``). A template is matched
segment by segment: a literal compares case-insensitively (as ASP.NET routing does), a parameter takes
one segment, URL-decoded. Literal segments win over parameters (``things/latest`` before
``things/{name}``). Anything else ASP.NET routing offers (constraints such as ``{id:int}``, optional
``{x?}``, defaults ``{x=1}``, catch-all ``{*rest}``, parameters inside a segment) is refused at host
start with the template and the unsupported part named, so an app using it fails loudly here rather
than being routed differently from Azure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from emulator.funchost.core import HostStartupError

_PARAM_RE = re.compile(r"^\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}$")


@dataclass(frozen=True)
class RouteTemplate:
    """A parsed route template: per segment, a literal or a parameter name (``literals[i]`` is None)."""

    template: str
    literals: tuple[str | None, ...]
    names: tuple[str, ...]  # the parameter of each segment, "" for a literal

    @classmethod
    def parse(cls, template: str) -> RouteTemplate:
        literals: list[str | None] = []
        names: list[str] = []
        parts = template.strip("/").split("/") if template.strip("/") else []
        for part in parts:
            if not part:
                raise HostStartupError(f"route {template!r}: empty segment")
            if "{" not in part and "}" not in part:
                literals.append(part)
                names.append("")
                continue
            match = _PARAM_RE.match(part)
            if not match:
                raise HostStartupError(
                    f"route {template!r}: segment {part!r} is not supported by the local host: only literal "
                    "segments and whole-segment {name} parameters (no constraints, optional, default or "
                    "catch-all parameters)"
                )
            literals.append(None)
            names.append(match["name"])
        given = [n for n in names if n]
        if len(given) != len(set(given)):
            raise HostStartupError(f"route {template!r}: a parameter name is used twice")
        return cls(template, tuple(literals), tuple(names))

    def precedence(self) -> tuple[int, ...]:
        """Sort key: a literal (0) before a parameter (1), segment by segment."""
        return tuple(0 if literal is not None else 1 for literal in self.literals)

    def match(self, path: str) -> dict[str, str] | None:
        """Route values for ``path`` (below the route prefix, not URL-decoded yet), or None."""
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        if len(parts) != len(self.literals):
            return None
        values: dict[str, str] = {}
        for part, literal, name in zip(parts, self.literals, self.names, strict=True):
            if literal is not None:
                if part.lower() != literal.lower():
                    return None
            else:
                values[name] = part
        return values
