"""Type-check Bicep resource declarations against the Bicep compiler's own type definitions.

There is no Bicep CLI offline, but the type definitions the compiler checks templates against are plain
JSON (Azure/bicep-types-az, vendored unchanged under tests/data/bicep-types/, see its README). This
module parses a .bicep file with pycep-parser and, for every ``resource`` declaration, resolves
``type@apiVersion`` in those definitions and walks the declared body:

- a property name the object type does not define (and the object takes no additional properties);
- a ReadOnly property that the template sets;
- a Required property left out (at the top of the body, and in every object the template writes out
  literally);
- a literal of the wrong kind (a string where an integer is expected, ...), a string literal outside a
  union of string literals, a literal outside the type's min/max length or value;
- a DiscriminatedObjectType (e.g. ``Microsoft.Web/sites/config``, discriminated by ``name``) is checked
  as the element its discriminator selects;
- a resource whose ``type@apiVersion`` has no definition here is a finding of its own;
- a property read from a resource symbol (``site.properties.defaultHostName``, also inside ``'${...}'``)
  must exist in that resource's type;
- a module call passes only parameters the module declares, all it requires, and literals of the
  declared type and @allowed values.

Deliberately NOT evaluated: expressions. Parameters, variables, function calls, conditionals, property
accessors and string interpolation are not computed, so only literal values are checked; property
NAMES are always checked, whatever their value is (and so are the names an accessor reads from a
resource). ``existing`` resources are only checked for their type, their name and that they carry
nothing but name/scope/parent/dependsOn.

Child resources (https://learn.microsoft.com/azure/azure-resource-manager/bicep/child-resource-name-type,
MicrosoftDocs/azure-docs articles/azure-resource-manager/bicep/child-resource-name-type.md): a resource
nested in another one gets the parent's type plus its own relative type, and the parent's API version
unless it states its own (``<segment>@<version>``); a resource with ``parent:`` states the full type,
which must be the parent's type plus one segment.

Nothing here knows about particular resources: adding a resource to infra/ checks it too, and a new
type@version needs only its types.json copied from Azure/bicep-types-az.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from tests.infra.bicep_model import INFRA, REPO_ROOT, ToolMissingError

TYPES_ROOT = REPO_ROOT / "tests" / "data" / "bicep-types"

# ObjectType property flags, as tests/data/bicep-types/README.md lists them.
REQUIRED, READ_ONLY, WRITE_ONLY, DEPLOY_TIME_CONSTANT = 1, 2, 4, 8
# ResourceType readableScopes/writableScopes bit of an extension resource (one deployed with `scope:` onto
# another resource): ScopeType Tenant 1, ManagementGroup 2, Subscription 4, ResourceGroup 8, Extension 16
# (Azure/bicep-types src/Bicep.Types/Concrete/ScopeType.cs). roleAssignments@2022-04-01 has 31 here.
EXTENSION_SCOPE = 16

# Keys of a resource body that are Bicep language, not resource properties.
LANGUAGE_KEYS = {"parent", "scope", "dependsOn"}
EXISTING_KEYS = {"name", "scope", "parent", "dependsOn"}

CHILDREN = "@children"  # where the parser keeps nested `resource` declarations of an object
DUPLICATES = "@duplicates"  # keys written twice in one object literal


# ---------------------------------------------------------------------------------------------------
# Parsing: pycep-parser, keeping what the type check needs
# ---------------------------------------------------------------------------------------------------


class ObjectLiteral(dict[str, Any]):
    """An object the template writes out (``{ ... }``), as opposed to an expression node of pycep."""


class ArrayLiteral(list[Any]):
    """An array the template writes out (``[ ... ]``)."""


def _bicep_element() -> type[str]:
    """pycep's marker for a bare name (parameter, variable, resource, loop item): a str subclass, so an
    identifier is an expression and a plain str is a string literal."""
    try:
        from pycep.models import BicepElement
    except ImportError as exc:  # fail loudly, never skip
        raise ToolMissingError(
            "pycep-parser is not installed in .venv: run `make setup` (requirements-dev.txt pins it)"
        ) from exc
    element: type[str] = BicepElement
    return element


Identifier = _bicep_element()


def _parser() -> Any:
    from lark import Token
    from pycep import BicepParser
    from pycep.transformer import BicepToJson

    def plain(value: Any) -> Any:
        return value.value if isinstance(value, Token) else value

    class Transformer(BicepToJson):  # type: ignore[misc]
        """pycep's transformer, except: object/array literals are marked, every nested `resource` of an
        object is kept (pycep keeps only the last one, with a wrong API version when it states its own),
        and duplicate keys are recorded."""

        def object(self, args: list[tuple[str, Any]]) -> ObjectLiteral:
            result = ObjectLiteral()
            for key, value in args:
                if key == "__child_resource__":
                    result.setdefault(CHILDREN, []).append(value)
                    continue
                if key in result:
                    result.setdefault(DUPLICATES, []).append(key)
                result[key] = plain(value)
            return result

        def array(self, args: list[Any]) -> ArrayLiteral:
            return ArrayLiteral(plain(item) for item in args)

        def pair(self, args: tuple[Any, Any]) -> tuple[str, Any]:
            key, value = args
            return str(key), plain(value)

        def process_child_resource(self, *args: Any, **kwargs: Any) -> None:
            return None  # nested resources are resolved by `declarations` below

    class Parser(BicepParser):  # type: ignore[misc]
        def parse(self, *, text: str | None = None, file_path: Path | None = None) -> Any:
            tree = self._create_tree(text=text, file_path=file_path)
            return Transformer(add_line_numbers=True).transform(tree)

    return Parser()


@cache
def _cached_parser() -> Any:
    return _parser()


def parse(text: str) -> dict[str, Any]:
    """The pycep document of Bicep source ``text`` (resources with literal markers, see above)."""
    doc: dict[str, Any] = _cached_parser().parse(text=text)
    return doc


# ---------------------------------------------------------------------------------------------------
# Resource declarations, with full types
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Declaration:
    symbol: str  # symbolic name; nested ones as parent::child
    type: str  # full resource type
    api_version: str
    existing: bool
    body: dict[str, Any]  # the object of the declaration, through `if (...)` and `[for ...]`
    line: int | None
    problems: tuple[str, ...] = ()  # problems found while resolving the declaration itself


def _unwrap(config: Any) -> Any:
    """The body of ``if (c) {...}`` and ``[for x in y: {...}]`` (and their combinations)."""
    while isinstance(config, dict) and not isinstance(config, ObjectLiteral) and "config" in config:
        config = config["config"]
    return config


def _split_type(text: str) -> tuple[str, str | None]:
    type_, _, version = text.partition("@")
    return type_, version or None


def declarations(doc: dict[str, Any]) -> list[Declaration]:
    """Every resource declaration of a parsed file, nested ones included, with its full type."""
    top: dict[str, Any] = doc.get("resources", {})
    result: list[Declaration] = []
    full_types = {symbol: entry["type"] for symbol, entry in top.items()}

    def visit(symbol: str, type_: str, version: str, existing: bool, config: Any, line: int | None) -> None:
        problems: list[str] = []
        body = _unwrap(config)
        if not isinstance(body, ObjectLiteral):
            problems.append(f"the body of {symbol} is not an object the checker can read")
            body = ObjectLiteral()
        parent = body.get("parent")
        if isinstance(parent, dict) and parent.get("operator", {}).get("type") == "index_accessor":
            parent = parent["operator"]["operands"]["operand_1"]  # `parent: accounts[i]`, a looped parent
        if isinstance(parent, Identifier):
            parent_type = full_types.get(parent)
            if parent_type is None:
                problems.append(f"parent {parent!r} is not a resource of this file")
            elif not (type_.lower().startswith(parent_type.lower() + "/") and "/" not in type_[len(parent_type) + 1 :]):
                problems.append(
                    f"with `parent: {parent}` the type must be {parent_type}/<child>, not {type_} "
                    "(a resource with parent: states its full type)"
                )
        elif parent is not None:
            problems.append("parent: must name a resource symbol of this file")
        result.append(Declaration(symbol, type_, version, existing, body, line, tuple(problems)))
        for child in body.get(CHILDREN, []):
            attrs = child["__attrs__"]
            relative, child_version = _split_type(attrs["type"])
            child_type = f"{type_}/{relative}"
            child_symbol = f"{symbol}::{child['__name__']}"
            full_types[child_symbol] = child_type
            visit(
                child_symbol,
                child_type,
                child_version or version,
                bool(attrs["existing"]),
                attrs["config"],
                attrs.get("__start_line__"),
            )

    for symbol, entry in top.items():
        visit(
            symbol,
            entry["type"],
            entry["api_version"],
            bool(entry["existing"]),
            entry["config"],
            entry.get("__start_line__"),
        )
    return result


# ---------------------------------------------------------------------------------------------------
# The type definitions
# ---------------------------------------------------------------------------------------------------


class TypeFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.types: list[dict[str, Any]] = json.loads(path.read_text())

    def resolve(self, ref: dict[str, str]) -> dict[str, Any]:
        return self.types[int(ref["$ref"].rsplit("/", 1)[1])]


@dataclass(frozen=True)
class ResolvedType:
    file: TypeFile
    resource: dict[str, Any]


@cache
def _type_file(path: str) -> TypeFile:
    return TypeFile(Path(path))


def resource_type(type_: str, api_version: str, root: Path = TYPES_ROOT) -> ResolvedType | str:
    """The ResourceType for ``type@api_version``, or why there is none."""
    namespace = type_.split("/", 1)[0].lower()
    path = root / namespace / api_version / "types.json"
    wanted = f"{type_}@{api_version}".lower()
    if not path.is_file():
        return (
            f"{type_}@{api_version}: no type definitions for {namespace} {api_version} in "
            f"{root.relative_to(REPO_ROOT) if root.is_relative_to(REPO_ROOT) else root}; "
            f"add {namespace}/{api_version}/types.json from Azure/bicep-types-az (unchanged)"
        )
    file = _type_file(str(path))
    for entry in file.types:
        if entry["$type"] == "ResourceType" and entry["name"].lower() == wanted:
            return ResolvedType(file, entry)
    return (
        f"{type_}@{api_version}: {path.relative_to(root)} has no such resource type; check the type name "
        "and API version, or add the right types.json from Azure/bicep-types-az"
    )


# ---------------------------------------------------------------------------------------------------
# Checking values against types
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    where: str  # file:line resource-symbol
    path: str  # property path inside the body
    message: str

    def __str__(self) -> str:
        return f"{self.where} {self.path}: {self.message}" if self.path else f"{self.where}: {self.message}"


_INTERPOLATION = re.compile(r"(?<!\\)\$\{")


def _literal_kind(value: Any) -> str | None:
    """'string' | 'int' | 'bool' | 'object' | 'array' for literals (and interpolated strings, which are
    strings of unknown value), None for expressions and null."""
    if isinstance(value, Identifier):
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, str):
        return "string"
    if isinstance(value, ObjectLiteral):
        return "object"
    if isinstance(value, ArrayLiteral):
        return "array"
    if _negative_int(value) is not None:
        return "int"
    return None


def _negative_int(value: Any) -> int | None:
    if isinstance(value, dict) and not isinstance(value, ObjectLiteral) and "operator" in value:
        op = value["operator"]
        if op.get("type") == "minus" and isinstance(op["operands"].get("integer_value"), int):
            return -int(op["operands"]["integer_value"])
    return None


def _string_value(value: str) -> str | None:
    """The value of a string literal (None if it interpolates, i.e. is an expression)."""
    if _INTERPOLATION.search(value):
        return None
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r", "t": "\t"}.get(m[1], m[1]), value)


def _is_for_expression(value: Any) -> bool:
    return isinstance(value, dict) and not isinstance(value, ObjectLiteral) and "loop_type" in value


def _unquote_key(key: str) -> str | None:
    """The property name of an object key; None when the key is computed (interpolated)."""
    if len(key) >= 2 and key[0] == key[-1] == "'":
        inner = key[1:-1]
        return None if _INTERPOLATION.search(inner) else inner
    return key


@dataclass
class Checker:
    file: TypeFile
    where: str
    findings: list[Finding] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)  # property paths whose name the type defines

    def report(self, path: str, message: str) -> None:
        self.findings.append(Finding(self.where, path, message))

    def describe(self, ref: dict[str, str]) -> str:
        t = self.file.resolve(ref)
        kind = t["$type"]
        if kind == "StringLiteralType":
            return repr(t["value"])
        if kind == "UnionType":
            return " | ".join(self.describe(e) for e in t["elements"])
        return {
            "StringType": "string",
            "IntegerType": "int",
            "BooleanType": "bool",
            "ObjectType": "object",
            "DiscriminatedObjectType": "object",
            "ArrayType": "array",
            "AnyType": "any",
        }.get(kind, kind)

    # -- values -------------------------------------------------------------------------------------

    def value(self, value: Any, ref: dict[str, str], path: str) -> None:
        t = self.file.resolve(ref)
        kind = t["$type"]
        literal = _literal_kind(value)
        if kind == "AnyType":
            return
        if _is_for_expression(value):
            if kind == "ArrayType":
                self.value(_unwrap(value), t["itemType"], f"{path}[for]")
            elif kind != "UnionType":
                self.report(path, f"a for-expression (an array) where the type is {self.describe(ref)}")
            return
        if literal is None:
            return  # an expression: not evaluated offline
        if kind == "UnionType":
            self.union(value, t, ref, path)
        elif kind == "StringLiteralType":
            if literal != "string":
                self.report(path, f"{literal} literal where the type is {t['value']!r}")
            else:
                actual = _string_value(value)
                if actual is not None and actual != t["value"]:
                    self.report(path, f"{actual!r} is not the allowed value {t['value']!r}")
        elif kind == "StringType":
            if literal != "string":
                self.report(path, f"{literal} literal where the type is string")
            else:
                self.length(_string_value(value), t, path)
        elif kind == "IntegerType":
            if literal != "int":
                self.report(path, f"{literal} literal where the type is int")
            else:
                number = value if isinstance(value, int) else _negative_int(value)
                assert number is not None
                if "minValue" in t and number < t["minValue"]:
                    self.report(path, f"{number} is below the minimum {t['minValue']}")
                if "maxValue" in t and number > t["maxValue"]:
                    self.report(path, f"{number} is above the maximum {t['maxValue']}")
        elif kind == "BooleanType":
            if literal != "bool":
                self.report(path, f"{literal} literal where the type is bool")
        elif kind == "ArrayType":
            if literal != "array":
                self.report(path, f"{literal} literal where the type is an array")
                return
            self.length(value, t, path)
            for index, item in enumerate(value):
                self.value(item, t["itemType"], f"{path}[{index}]")
        elif kind == "ObjectType":
            if literal != "object":
                self.report(path, f"{literal} literal where the type is an object")
                return
            self.object(value, t["properties"], t.get("additionalProperties"), path)
        elif kind == "DiscriminatedObjectType":
            if literal != "object":
                self.report(path, f"{literal} literal where the type is an object")
                return
            self.discriminated(value, t, path)
        else:
            self.report(path, f"unexpected type kind {kind} in the type definitions")

    def length(self, value: Any, t: dict[str, Any], path: str) -> None:
        if value is None:
            return
        if "minLength" in t and len(value) < t["minLength"]:
            self.report(path, f"length {len(value)} is below the minimum length {t['minLength']}")
        if "maxLength" in t and len(value) > t["maxLength"]:
            self.report(path, f"length {len(value)} is above the maximum length {t['maxLength']}")

    def union(self, value: Any, t: dict[str, Any], ref: dict[str, str], path: str) -> None:
        for element in t["elements"]:
            trial = Checker(self.file, self.where)
            trial.value(value, element, path)
            if not trial.findings:
                self.checked.extend(trial.checked)
                return
        shown = _string_value(value) if isinstance(value, str) else value
        self.report(path, f"{shown!r} is not one of the allowed values: {self.describe(ref)}")

    def discriminated(self, value: ObjectLiteral, t: dict[str, Any], path: str) -> None:
        key = t["discriminator"]
        allowed = sorted(t["elements"])
        written = {_unquote_key(k): v for k, v in value.items()}
        if key not in written:
            self.report(path, f"the discriminator {key!r} is missing (one of {allowed})")
            return
        chosen = written[key]
        if not isinstance(chosen, str) or _string_value(chosen) is None:
            self.report(
                f"{path}.{key}".lstrip("."),
                f"the discriminator {key!r} must be a literal to choose the shape (one of {allowed})",
            )
            return
        element_ref = t["elements"].get(_string_value(chosen))
        if element_ref is None:
            self.report(f"{path}.{key}".lstrip("."), f"{chosen!r} is not one of {allowed}")
            return
        element = self.file.resolve(element_ref)
        properties = {**t.get("baseProperties", {}), **element["properties"]}
        self.object(value, properties, element.get("additionalProperties"), path)

    def object(
        self,
        value: ObjectLiteral,
        properties: dict[str, Any],
        additional: dict[str, str] | None,
        path: str,
        *,
        skip: frozenset[str] = frozenset(),
    ) -> None:
        by_lower = {name.lower(): name for name in properties}
        for key in value.get(DUPLICATES, []):
            self.report(_join(path, key), "written twice in the same object")
        present: set[str] = set()
        for raw_key, item in value.items():
            if raw_key in (CHILDREN, DUPLICATES):
                continue
            name = _unquote_key(raw_key)
            if name is None or name in skip:
                continue
            where = _join(path, name)
            declared = by_lower.get(name.lower())
            if declared is None:
                if additional is not None:
                    self.value(item, additional, where)
                    continue
                close = difflib.get_close_matches(name, list(properties), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                names = sorted(properties)
                shown = ", ".join(names[:15]) + (f", ... ({len(names)} in all)" if len(names) > 15 else "")
                self.report(where, f"unknown property ({hint}the type defines: {shown})")
                continue
            if declared != name:
                self.report(where, f"written {name!r}, the type defines {declared!r}")
            self.checked.append(where)
            present.add(declared)
            prop = properties[declared]
            if prop["flags"] & READ_ONLY:
                self.report(where, "read-only: Azure sets it, a template must not")
                continue
            self.value(item, prop["type"], where)
        for name, prop in properties.items():
            if prop["flags"] & REQUIRED and not prop["flags"] & READ_ONLY and name not in present:
                self.report(_join(path, name), f"required property missing ({self.describe(prop['type'])})")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


# ---------------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------------


def check_declaration(
    decl: Declaration, label: str, root: Path = TYPES_ROOT, checked: list[str] | None = None
) -> list[Finding]:
    """The findings of one declaration; ``checked`` collects the property paths it resolved in the types."""
    where = f"{label}:{decl.line} {decl.symbol}" if decl.line else f"{label} {decl.symbol}"
    findings = [Finding(where, "", problem) for problem in decl.problems]
    resolved = resource_type(decl.type, decl.api_version, root)
    if isinstance(resolved, str):
        return [*findings, Finding(where, "", resolved)]
    checker = Checker(resolved.file, where, findings, [] if checked is None else checked)
    body = decl.body
    name = body.get("name")
    if (
        isinstance(name, str)
        and not isinstance(name, Identifier)
        and ("parent" in body or "::" in decl.symbol)
        and "/" in (_string_value(name) or "")
    ):
        checker.report("name", "a child resource's name is its own segment only (no '/')")
    if decl.existing:
        if name is None:
            checker.report("name", "required property missing")
        for key in body:
            if key not in EXISTING_KEYS and key not in (CHILDREN, DUPLICATES):
                checker.report(key, "an `existing` resource takes only name, scope, parent and dependsOn")
        return checker.findings
    if "scope" in body and not resolved.resource.get("writableScopes", 0) & EXTENSION_SCOPE:
        checker.report("scope", f"{decl.type} is not an extension resource: it cannot take `scope:`")
    body_type = resolved.file.resolve(resolved.resource["body"])
    skip = frozenset(LANGUAGE_KEYS)
    if body_type["$type"] == "DiscriminatedObjectType":
        filtered = ObjectLiteral({k: v for k, v in body.items() if k not in skip})
        checker.discriminated(filtered, body_type, "")
    else:
        checker.object(body, body_type["properties"], body_type.get("additionalProperties"), "", skip=skip)
    return checker.findings


# ---------------------------------------------------------------------------------------------------
# Property access on resources: `site.properties.defaultHostName`, `vnet.properties.subnets[1].id`
# ---------------------------------------------------------------------------------------------------

INDEX = object()  # an index step in an accessor chain
_INTERPOLATED_CHAIN = re.compile(r"(?<!\\)\$\{\s*([A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[\d+\])+)\s*\}")


def _chain(node: Any) -> list[Any] | None:
    """``a.b[0].c`` as ['a', 'b', INDEX, 'c']; None when the chain does not start at a bare name."""
    if isinstance(node, str):
        return [str(node)]
    if isinstance(node, dict) and not isinstance(node, ObjectLiteral) and "operator" in node:
        op = node["operator"]
        if op.get("type") == "property_accessor":
            left, right = _chain(op["operands"]["operand_1"]), _chain(op["operands"]["operand_2"])
            return None if left is None or right is None else left + right
        if op.get("type") == "index_accessor":
            left = _chain(op["operands"]["operand_1"])
            return None if left is None else [*left, INDEX]
    return None


def _chains(node: Any) -> Iterator[list[Any]]:
    """Every accessor chain in a pycep value: accessor nodes, and `${a.b.c}` inside string literals."""
    if isinstance(node, dict) and not isinstance(node, ObjectLiteral) and "operator" in node:
        op = node["operator"]
        if op.get("type") in ("property_accessor", "index_accessor"):
            chain = _chain(node)
            if chain is not None and len(chain) > 1:
                yield chain
                return
        yield from _chains(op.get("operands", {}))
        return
    if isinstance(node, str) and not isinstance(node, Identifier):
        for match in _INTERPOLATED_CHAIN.finditer(node):
            chain: list[Any] = []
            for part in re.split(r"(\[\d+\])|\.", match[1]):
                if part is None or part == "":
                    continue
                chain.append(INDEX if part.startswith("[") else part)
            yield chain
        return
    if isinstance(node, dict):
        for value in node.values():
            yield from _chains(value)
    elif isinstance(node, list):
        for value in node:
            yield from _chains(value)


def accessor_findings(
    doc: dict[str, Any], decls: list[Declaration], label: str, root: Path = TYPES_ROOT
) -> list[Finding]:
    """Property names read from a resource symbol must exist in the resource's type (Bicep checks them:
    a misspelt `site.properties.defaultHostNam` does not compile)."""
    by_symbol = {decl.symbol: decl for decl in decls if "::" not in decl.symbol}
    loops = {
        symbol
        for symbol, entry in doc.get("resources", {}).items()
        if isinstance(entry["config"], dict) and "loop_type" in entry["config"]
    }
    findings: list[Finding] = []
    seen: set[str] = set()
    for chain in _chains({k: v for k, v in doc.items() if k in ("variables", "resources", "modules", "outputs")}):
        head = chain[0]
        decl = by_symbol.get(head)
        if decl is None:
            continue
        steps = chain[1:]
        if head in loops and steps and steps[0] is INDEX:
            steps = steps[1:]
        text = head + "".join("[n]" if s is INDEX else f".{s}" for s in steps)
        if text in seen:
            continue
        seen.add(text)
        resolved = resource_type(decl.type, decl.api_version, root)
        if isinstance(resolved, str):
            continue  # reported with the declaration
        problem = _walk_access(resolved, decl, steps)
        if problem:
            findings.append(Finding(f"{label} {text}", "", problem))
    return findings


def _walk_access(resolved: ResolvedType, decl: Declaration, steps: list[Any]) -> str | None:
    file = resolved.file
    current = file.resolve(resolved.resource["body"])
    if current["$type"] == "DiscriminatedObjectType":
        name = decl.body.get(current["discriminator"])
        value = _string_value(name) if isinstance(name, str) and not isinstance(name, Identifier) else None
        refs = [current["elements"][value]] if value in current["elements"] else list(current["elements"].values())
        merged: dict[str, Any] = dict(current.get("baseProperties", {}))
        for ref in refs:
            merged.update(file.resolve(ref)["properties"])
        current = {"$type": "ObjectType", "properties": merged}
    walked = decl.symbol
    for step in steps:
        kind = current["$type"]
        if kind == "AnyType" or kind == "UnionType":
            return None  # free-form, or one of several shapes: not followed
        if step is INDEX:
            if kind != "ArrayType":
                return f"{walked} is not an array ({kind}); it cannot be indexed"
            current = file.resolve(current["itemType"])
            walked += "[n]"
            continue
        if kind == "DiscriminatedObjectType":
            return None
        if kind != "ObjectType":
            return f"{walked} is a {kind}; it has no property {step!r}"
        props = current["properties"]
        declared = {name.lower(): name for name in props}.get(str(step).lower())
        if declared is None:
            if current.get("additionalProperties"):
                current = file.resolve(current["additionalProperties"])
                walked += f".{step}"
                continue
            close = difflib.get_close_matches(str(step), list(props), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return f"the type of {walked} has no property {step!r}{hint}"
        if declared != step:
            return f"{walked}.{step}: the type spells it {declared!r}"
        if props[declared]["flags"] & WRITE_ONLY:
            return f"{walked}.{step} is write-only: it cannot be read back"
        current = file.resolve(props[declared]["type"])
        walked += f".{step}"
    return None


# ---------------------------------------------------------------------------------------------------
# Module calls against the called file's parameters
# ---------------------------------------------------------------------------------------------------

MODULE_KEYS = {"name", "params", "scope", "dependsOn"}
_PARAM_KINDS = {"string": "string", "int": "int", "bool": "bool", "object": "object", "array": "array"}


def _nullable_params(text: str) -> set[str]:
    """Parameters declared `param x type?` (pycep drops the `?`): optional without a default."""
    return set(re.findall(r"^\s*param\s+([A-Za-z_]\w*)\s+[A-Za-z_][\w.]*(?:\[\])*\?", text, flags=re.MULTILINE))


def module_findings(doc: dict[str, Any], label: str, base: Path) -> list[Finding]:
    """A module call passes only parameters the module declares, every one it requires, and literals of
    the declared type and @allowed values (what `bicep build` checks for local modules)."""
    findings: list[Finding] = []
    for symbol, entry in doc.get("modules", {}).items():
        where = f"{label}:{entry.get('__start_line__')} module {symbol}"
        target = base / entry["detail"]["path"]
        if entry.get("type") != "local":
            continue
        if not target.is_file():
            findings.append(Finding(where, "", f"module file {entry['detail']['path']} does not exist"))
            continue
        body = _unwrap(entry["config"])
        if not isinstance(body, ObjectLiteral):
            continue
        for key in body:
            if key not in MODULE_KEYS and key not in (CHILDREN, DUPLICATES):
                findings.append(Finding(where, key, "a module takes only name, params, scope and dependsOn"))
        text = target.read_text()
        declared: dict[str, Any] = parse(text).get("parameters", {})
        optional = _nullable_params(text)
        defaults = set(re.findall(r"^\s*param\s+([A-Za-z_]\w*)\s[^=\n]*=", text, flags=re.MULTILINE))
        passed = body.get("params", ObjectLiteral())
        if not isinstance(passed, ObjectLiteral):
            continue
        for raw_key, value in passed.items():
            name = _unquote_key(raw_key)
            if name is None or raw_key in (CHILDREN, DUPLICATES):
                continue
            if name not in declared:
                close = difflib.get_close_matches(name, list(declared), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                findings.append(Finding(where, f"params.{name}", f"{target.name} declares no such parameter{hint}"))
                continue
            problem = _param_value_problem(declared[name], value)
            if problem:
                findings.append(Finding(where, f"params.{name}", problem))
        for name in declared:
            if name not in defaults and name not in optional and name not in passed:
                findings.append(Finding(where, f"params.{name}", f"required by {target.name} but not passed"))
    return findings


def _param_value_problem(param: dict[str, Any], value: Any) -> str | None:
    literal = _literal_kind(value)
    if literal is None:
        return None
    expected = _PARAM_KINDS.get(str(param.get("type")))
    if expected is not None and literal != expected:
        return f"{literal} literal where the parameter is {expected}"
    for decorator in param.get("decorators", []):
        if decorator.get("type") == "allowed" and isinstance(value, str):
            actual = _string_value(value)
            allowed = list(decorator.get("argument") or [])
            if actual is not None and actual not in allowed:
                return f"{actual!r} is not one of the @allowed values {allowed}"
    return None


def check_text(
    text: str,
    label: str = "snippet.bicep",
    root: Path = TYPES_ROOT,
    checked: list[str] | None = None,
    base: Path | None = None,
) -> list[Finding]:
    """Every finding in Bicep source ``text`` (module calls too when ``base``, the file's folder, is given)."""
    doc = parse(text)
    decls = declarations(doc)
    return (
        [finding for decl in decls for finding in check_declaration(decl, label, root, checked)]
        + accessor_findings(doc, decls, label, root)
        + (module_findings(doc, label, base) if base is not None else [])
    )


def check_file(path: Path, root: Path = TYPES_ROOT, checked: list[str] | None = None) -> list[Finding]:
    label = path.relative_to(INFRA).as_posix() if path.is_relative_to(INFRA) else str(path)
    return check_text(path.read_text(), label, root, checked, base=path.parent)


def infra_files() -> Iterator[Path]:
    return iter(sorted(INFRA.rglob("*.bicep")))
