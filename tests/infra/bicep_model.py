"""A small, read-only model of the Bicep in infra/, for the offline checks in this package.

pycep-parser turns a .bicep file into JSON (parameters, variables, resources, modules, outputs) with
expressions as trees. There is no Bicep CLI offline, so no ARM JSON to evaluate; instead ``evaluate``
follows just enough of the language to answer the questions the tests ask: "what value does this app
setting get with the default parameters", "which resource is this role assignment scoped to", "whose
principal id ends up here, across module boundaries".

Design decisions:
- **Identifiers are resolved by name.** pycep renders both the string literal ``'x'`` and the identifier
  ``x`` as ``"x"``; a bare string that names a parameter or variable of the file is treated as that
  symbol. Our templates never use a literal equal to one of their own symbol names, and a wrong guess
  would make a test fail, not pass.
- **What cannot be computed offline stays symbolic.** ``subscription().subscriptionId`` or
  ``site.identity.principalId`` evaluate to an ``Expr`` carrying the dotted path, which tests compare
  against the path they expect.
- **Module outputs are followed.** ``storage.outputs.blobEndpoint`` evaluates the module's output in a
  scope where the module's parameters are bound to what the caller passed: this is how a test checks
  that RELEASE_CONTAINER and the container the storage module creates are the same value.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"

_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*)\}")


class ToolMissingError(RuntimeError):
    """A checker the tests need is not installed: the message says how to install it."""


def _pycep() -> Any:
    try:
        from pycep import BicepParser
    except ImportError as exc:  # the tests must fail loudly, never skip, when the parser is missing
        raise ToolMissingError(
            "pycep-parser is not installed in .venv: run `make setup` (requirements-dev.txt pins it)"
        ) from exc
    return BicepParser()


@dataclass(frozen=True)
class Expr:
    """A value only Azure knows (a resource property, a deployment function), kept as its dotted path."""

    text: str


def unquote(key: str) -> str:
    """pycep keeps the quotes of quoted object keys ('AzureWebJobsStorage__accountName')."""
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == "'" else key


def body(entry: dict[str, Any]) -> dict[str, Any]:
    """The body of a resource/module, looking through ``if (condition)`` and ``[for x in xs: ...]``."""
    config: dict[str, Any] = entry["config"]
    if set(config) == {"loop_type", "condition", "config"}:
        looped: dict[str, Any] = config["config"]
        return looped
    if set(config) == {"condition", "config"}:
        inner: dict[str, Any] = config["config"]
        return inner
    return config


def accessor_path(expr: Any) -> str | None:
    """``a.b.c`` for a property-accessor tree, None for anything else."""
    if isinstance(expr, str):
        return expr
    if isinstance(expr, dict) and "operator" in expr and expr["operator"]["type"] == "property_accessor":
        operands = expr["operator"]["operands"]
        left, right = accessor_path(operands["operand_1"]), accessor_path(operands["operand_2"])
        if left is None or right is None:
            return None
        return f"{left}.{right}"
    return None


@dataclass(frozen=True)
class BicepFile:
    path: Path
    doc: dict[str, Any]

    @property
    def relpath(self) -> str:
        return self.path.relative_to(INFRA).as_posix()

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.doc.get("parameters", {}))

    @property
    def variables(self) -> dict[str, Any]:
        return dict(self.doc.get("variables", {}))

    @property
    def resources(self) -> dict[str, Any]:
        return dict(self.doc.get("resources", {}))

    @property
    def modules(self) -> dict[str, Any]:
        return dict(self.doc.get("modules", {}))

    @property
    def outputs(self) -> dict[str, Any]:
        return dict(self.doc.get("outputs", {}))

    def resources_of_type(self, type_: str, *, include_existing: bool = True) -> dict[str, Any]:
        return {
            name: res
            for name, res in self.resources.items()
            if res["type"].lower() == type_.lower() and (include_existing or not res["existing"])
        }

    def module_file(self, symbol: str) -> BicepFile:
        return load(str((self.path.parent / self.modules[symbol]["detail"]["path"]).resolve()))


@cache
def load(path: str) -> BicepFile:
    """Parse one .bicep file (cached: the files do not change during a test session)."""
    file = Path(path)
    return BicepFile(file, json.loads(json.dumps(_pycep().parse(file_path=file))))


def all_files() -> list[BicepFile]:
    return [load(str(p)) for p in sorted(INFRA.rglob("*.bicep"))]


@dataclass(frozen=True)
class Scope:
    """A file plus the values its parameters are bound to (a module call), or their defaults."""

    file: BicepFile
    bindings: dict[str, tuple[Any, Scope]] = field(default_factory=dict)

    def enter_module(self, symbol: str) -> Scope:
        params = body(self.file.modules[symbol]).get("params", {})
        return Scope(self.file.module_file(symbol), {name: (expr, self) for name, expr in params.items()})


def evaluate(expr: Any, scope: Scope) -> Any:
    """The value of ``expr`` with default parameters, as far as it can be known offline."""
    if expr is None or isinstance(expr, bool | int | float):
        return expr
    if isinstance(expr, list):
        return [evaluate(item, scope) for item in expr]
    if isinstance(expr, str):
        return _evaluate_name(expr, scope)
    if not isinstance(expr, dict):
        raise TypeError(f"unexpected pycep node {expr!r}")
    if "function" in expr:
        fn = expr["function"]
        args = list(fn["parameters"].values())
        if fn["type"] == "string":
            value = evaluate(args[0], scope)
            if isinstance(value, bool):
                return "true" if value else "false"
            return value if isinstance(value, Expr) else str(value)
        return Expr(f"{fn['type']}(...)")
    if "operator" in expr:
        path = accessor_path(expr)
        if path is not None:
            return _evaluate_path(path, scope)
        return Expr(expr["operator"]["type"])
    return {unquote(k): evaluate(v, scope) for k, v in expr.items()}


def _evaluate_name(text: str, scope: Scope) -> Any:
    if text in scope.file.params:
        if text in scope.bindings:
            bound, caller = scope.bindings[text]
            return evaluate(bound, caller)
        default = scope.file.params[text].get("default")
        return evaluate(default, scope) if default is not None else Expr(f"param {text}")
    if text in scope.file.variables:
        return evaluate(scope.file.variables[text]["value"], scope)
    if "${" in text:

        def substitute(match: re.Match[str]) -> str:
            value = _evaluate_path(match[1], scope) if "." in match[1] else _evaluate_name(match[1], scope)
            return match[0] if isinstance(value, Expr) else str(value)

        return _INTERPOLATION.sub(substitute, text)
    return text


def _evaluate_path(path: str, scope: Scope) -> Any:
    head, _, rest = path.partition(".")
    if not rest:
        return _evaluate_name(head, scope)
    if head in scope.file.modules and rest.startswith("outputs."):
        inner = scope.enter_module(head)
        output = rest.removeprefix("outputs.")
        return evaluate(inner.file.outputs[output]["value"], inner)
    if head in scope.file.resources and rest == "name":
        return evaluate(body(scope.file.resources[head])["name"], scope)
    return Expr(path)


def resolve_principal(expr: Any, scope: Scope) -> str:
    """Where a principalId comes from, across modules: 'site.identity.principalId' in functionapp.bicep
    becomes 'modules/functionapp.bicep:site.identity.principalId'. Conditionals resolve to the branch
    that assigns (the other one is the empty string that switches the assignment off)."""
    if isinstance(expr, dict) and "operator" in expr and expr["operator"]["type"] == "conditional":
        return resolve_principal(expr["operator"]["operands"]["true_value"], scope)
    path = accessor_path(expr)
    if path is None:
        return "<unknown>"
    head, _, rest = path.partition(".")
    if not rest and head in scope.file.params:
        if head in scope.bindings:
            bound, caller = scope.bindings[head]
            return resolve_principal(bound, caller)
        return f"{scope.file.relpath}:param {head}"
    if head in scope.file.modules and rest.startswith("outputs."):
        inner = scope.enter_module(head)
        return resolve_principal(inner.file.outputs[rest.removeprefix("outputs.")]["value"], inner)
    return f"{scope.file.relpath}:{path}"
