"""The official REST spec subset vendored in ``tests/data/azure-rest-specs`` (Microsoft.Compute
2026-04-01) as JSON Schemas, for checking the emulator's bodies: over HTTPS through the SDK
(tests/integration/test_emulator_shapes.py) and as rendered, without a server (tests/unit/test_arm_render.py).

The swagger is OpenAPI 2.0, which jsonschema does not speak directly, so ``SpecSchemas`` converts
the definitions it needs into one JSON Schema:

* ``$ref``s are resolved across files (``./common-types/...``) and turned into local ``$defs``;
* ``allOf`` is flattened (properties and required merged) because every object gets
  ``additionalProperties: false`` when the spec lists its properties: an emulator property the spec
  does not know must fail, and ``allOf`` + closed objects would otherwise reject the base's fields;
* ``x-ms-enum`` with ``modelAsString: true`` is an open enum in ARM, so its ``enum`` is dropped;
* ``readOnly``, ``x-ms-*`` and ``format`` are annotations for this purpose (responses may carry
  read-only fields; formats are not asserted).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema

SPECS = Path(__file__).resolve().parents[0] / "data" / "azure-rest-specs"
SPEC_FILE = SPECS / "ComputeRP.vmss-subset.json"
EXAMPLES = SPECS / "examples" / "virtualMachineScaleSetExamples"


class SpecSchemas:
    """JSON Schemas for the response bodies of the swagger's operations."""

    def __init__(self, spec_file: Path) -> None:
        self._files: dict[Path, dict[str, Any]] = {}
        self._spec_file = spec_file.resolve()
        self._defs: dict[str, Any] = {}

    def _load(self, path: Path) -> dict[str, Any]:
        path = path.resolve()
        if path not in self._files:
            self._files[path] = json.loads(path.read_text())
        return self._files[path]

    def _resolve(self, ref: str, base: Path) -> tuple[Path, str, dict[str, Any]]:
        file_part, _, pointer = ref.partition("#")
        target = (base.parent / file_part).resolve() if file_part else base
        node: Any = self._load(target)
        for part in pointer.strip("/").split("/"):
            node = node[part]
        return target, pointer.rsplit("/", 1)[-1], node

    def _def_ref(self, ref: str, base: Path) -> dict[str, Any]:
        target, name, node = self._resolve(ref, base)
        key = f"{target.stem}.{name}"
        if key not in self._defs:
            self._defs[key] = {}  # placeholder first: recursive definitions terminate
            self._defs[key] = self._convert(node, target)
        return {"$ref": f"#/$defs/{key}"}

    def _flatten(self, node: dict[str, Any], base: Path) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
        """(properties with their files, required, the rest of the keys) of ``node`` with allOf merged."""
        props: dict[str, Any] = {}
        required: list[str] = []
        for part in node.get("allOf", []):
            if "$ref" in part:
                target, _, resolved = self._resolve(part["$ref"], base)
            else:
                target, resolved = base, part
            p, r, _ = self._flatten(resolved, target)
            props.update(p)
            required += r
        for name, sub in (node.get("properties") or {}).items():
            props[name] = (sub, base)
        required += node.get("required", [])
        return props, required, node

    def _convert(self, node: dict[str, Any], base: Path) -> dict[str, Any]:
        if "$ref" in node:
            return self._def_ref(node["$ref"], base)
        out: dict[str, Any] = {}
        if node.get("type"):
            out["type"] = node["type"]
        if "enum" in node and not (node.get("x-ms-enum") or {}).get("modelAsString", False):
            out["enum"] = node["enum"]
        if "items" in node:
            out["items"] = self._convert(node["items"], base)
        if "allOf" in node or "properties" in node:
            props, required, _ = self._flatten(node, base)
            out["type"] = "object"
            out["properties"] = {name: self._convert(sub, b) for name, (sub, b) in props.items()}
            if required:
                out["required"] = sorted(set(required))
        if isinstance(node.get("additionalProperties"), dict):
            out["additionalProperties"] = self._convert(node["additionalProperties"], base)
        elif "additionalProperties" in node:
            out["additionalProperties"] = node["additionalProperties"]
        elif "properties" in out:
            out["additionalProperties"] = False  # closed: unknown emulator properties fail
        return out

    def operation_schema(self, operation_id: str, status: str = "200") -> dict[str, Any]:
        spec = self._load(self._spec_file)
        for methods in spec["paths"].values():
            for method, op in methods.items():
                if method != "parameters" and op["operationId"] == operation_id:
                    root = self._convert(op["responses"][status]["schema"], self._spec_file)
                    return {
                        "$schema": "https://json-schema.org/draft/2020-12/schema",
                        **root,
                        "$defs": copy.deepcopy(self._defs),
                    }
        raise KeyError(operation_id)

    def validate(self, operation_id: str, body: Any) -> None:
        jsonschema.Draft202012Validator(self.operation_schema(operation_id)).validate(body)


def example_body(name: str) -> Any:
    return json.loads((EXAMPLES / name).read_text())["responses"]["200"]["body"]


def drop_nulls(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: drop_nulls(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [drop_nulls(v) for v in node]
    return node
