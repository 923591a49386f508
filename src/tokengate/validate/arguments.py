"""Tool-call arguments against the tool's JSON Schema: the subset tool schemas use (no runtime dependency).

Covers type, enum, const, required, properties, additionalProperties, items, minimum and maximum;
tests compare it with the `jsonschema` library on the schemas validate sends.
"""

from __future__ import annotations

import json
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def argument_errors(arguments: str, schema: dict[str, Any]) -> list[str]:
    """Why `arguments` (the JSON text a tool call carries) breaks `schema`; empty when it conforms."""
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError as exc:
        return [f"not valid JSON ({exc.msg} at character {exc.pos})"]
    return schema_errors(value, schema, "arguments")


def schema_errors(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    errors = _type_errors(value, schema, where) or _value_errors(value, schema, where)
    if errors:
        return errors
    if isinstance(value, dict):
        return _object_errors(value, schema, where)
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [e for i, item in enumerate(value) for e in schema_errors(item, schema["items"], f"{where}[{i}]")]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _range_errors(value, schema, where)
    return []


def _value_errors(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} is not one of {schema['enum']}"]
    if "const" in schema and value != schema["const"]:
        return [f"{where}: {value!r} is not {schema['const']!r}"]
    return []


def _type_errors(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    wanted = schema.get("type")
    if wanted is None:
        return []
    names = wanted if isinstance(wanted, list) else [wanted]
    if any(_is(value, name) for name in names):
        return []
    return [f"{where}: expected {' or '.join(names)}, got {type(value).__name__} {value!r}"]


def _is(value: Any, name: str) -> bool:
    if name == "boolean" or isinstance(value, bool):  # bool is an int in Python, not in JSON
        return name == "boolean" and isinstance(value, bool)
    if name == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    return isinstance(value, _TYPES.get(name, (object,)))


def _object_errors(value: dict[str, Any], schema: dict[str, Any], where: str) -> list[str]:
    properties: dict[str, Any] = schema.get("properties") or {}
    errors = [f"{where}: missing required {key!r}" for key in schema.get("required", []) if key not in value]
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            errors += schema_errors(item, properties[key], f"{where}.{key}")
        elif extra is False:
            errors.append(f"{where}: unexpected property {key!r}")
        elif isinstance(extra, dict):
            errors += schema_errors(item, extra, f"{where}.{key}")
    return errors


def _range_errors(value: float, schema: dict[str, Any], where: str) -> list[str]:
    if "minimum" in schema and value < schema["minimum"]:
        return [f"{where}: {value} is below the minimum {schema['minimum']}"]
    if "maximum" in schema and value > schema["maximum"]:
        return [f"{where}: {value} is above the maximum {schema['maximum']}"]
    return []
