"""Our small JSON Schema check agrees with the `jsonschema` library on the schemas tool calls use."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from tokengate.validate.arguments import argument_errors
from tokengate.validate.checks.tools import SCHEMA

RICHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Paris", "Rome"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "units": {"type": ["string", "null"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "exact": {"type": "boolean"},
        "ratio": {"type": "number"},
        "kind": {"const": "weather"},
    },
    "required": ["city"],
    "additionalProperties": False,
}
VALUES: list[Any] = [
    {"city": "Paris"}, {"city": "Rome", "days": 3}, {"city": "Oslo"}, {}, {"city": "Paris", "extra": 1},
    {"city": "Paris", "days": 0}, {"city": "Paris", "days": 8}, {"city": "Paris", "days": 2.0},
    {"city": "Paris", "days": 2.5}, {"city": "Paris", "days": True}, {"city": "Paris", "units": None},
    {"city": "Paris", "units": 3}, {"city": "Paris", "tags": ["a", "b"]}, {"city": "Paris", "tags": ["a", 1]},
    {"city": "Paris", "exact": 1}, {"city": "Paris", "exact": False}, {"city": "Paris", "ratio": 1},
    {"city": "Paris", "ratio": "1"}, {"city": "Paris", "kind": "weather"}, {"city": "Paris", "kind": "rain"},
    {"city": 5}, 85, "Paris", [], None,
]  # fmt: skip


@pytest.mark.parametrize("schema", [SCHEMA, RICHER], ids=["weather", "richer"])
@pytest.mark.parametrize("value", VALUES, ids=[json.dumps(v) for v in VALUES])
def test_agrees_with_jsonschema(schema: dict[str, Any], value: Any) -> None:
    expected_valid = jsonschema.Draft202012Validator(schema).is_valid(value)
    errors = argument_errors(json.dumps(value), schema)
    assert (not errors) is expected_valid, errors


def test_not_json_says_where() -> None:
    assert argument_errors('{"city": "Par', SCHEMA)[0].startswith("not valid JSON")


def test_errors_name_the_field() -> None:
    assert argument_errors('{"city": "Oslo"}', SCHEMA) == ["arguments.city: 'Oslo' is not one of ['Paris', 'Rome']"]
