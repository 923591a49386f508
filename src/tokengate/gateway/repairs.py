"""Per-family request repairs: small pure functions `request -> request`, each preventing one vLLM error.

Each repair returns the repaired request and how many things it changed; the
gateway counts them in /metrics by kind. Repairs never mutate their input.

| kind                     | families | the vLLM (or mistral_common) error it prevents                        |
|--------------------------|----------|------------------------------------------------------------------------|
| tool_choice_without_tools| all      | 400 "When using `tool_choice`, `tools` must be set."                  |
| empty_tools              | all      | 400 "`tools` must not be an empty array"                               |
| empty_assistant_message  | mistral  | 400 "Assistant message must have either content or tool_calls, but not both." |
| tool_call_index          | mistral  | mistral_common: extra field `index` not permitted in a tool call       |
| malformed_tool_arguments | mistral  | mistral_common: tool call arguments are not valid JSON                 |
| tool_call_id_format      | mistral  | mistral_common: tool call id "must be a-z, A-Z, 0-9, with a length of 9" |
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tokengate.versions import version_tuple

Request = dict[str, Any]
Repair = Callable[[Request], tuple[Request, int]]

MISTRAL_ID = re.compile(r"^[A-Za-z0-9]{9}$")
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class RepairKind:
    name: str
    families: frozenset[str] | None  # None: every family
    repair: Repair
    accepted_since: str | None = None  # the vLLM version from which the raw request is accepted; None: never


def drop_tool_choice_without_tools(request: Request) -> tuple[Request, int]:
    if "tool_choice" in request and not request.get("tools"):
        repaired = dict(request)
        del repaired["tool_choice"]
        return repaired, 1
    return request, 0


def drop_empty_tools(request: Request) -> tuple[Request, int]:
    if request.get("tools") == []:
        repaired = dict(request)
        del repaired["tools"]
        return repaired, 1
    return request, 0


def drop_empty_assistant_messages(request: Request) -> tuple[Request, int]:
    messages = request.get("messages")
    if not isinstance(messages, list):
        return request, 0
    kept = [m for m in messages if not _is_empty_assistant(m)]
    if len(kept) == len(messages):
        return request, 0
    return {**request, "messages": kept}, len(messages) - len(kept)


def _is_empty_assistant(message: Any) -> bool:
    if not isinstance(message, dict) or message.get("role") != "assistant" or message.get("tool_calls"):
        return False
    content = message.get("content")
    return content is None or content in ("", [])


def drop_tool_call_index(request: Request) -> tuple[Request, int]:
    return _edit_tool_calls(request, _without_index)


def _without_index(call: dict[str, Any]) -> tuple[dict[str, Any], int]:
    if "index" not in call:
        return call, 0
    return {k: v for k, v in call.items() if k != "index"}, 1


def fix_malformed_tool_arguments(request: Request) -> tuple[Request, int]:
    return _edit_tool_calls(request, _valid_arguments)


def _valid_arguments(call: dict[str, Any]) -> tuple[dict[str, Any], int]:
    function = call.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("arguments"), str):
        return call, 0
    try:
        parsed = json.loads(function["arguments"])
    except json.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        return call, 0
    return {**call, "function": {**function, "arguments": "{}"}}, 1


def map_tool_call_ids(request: Request) -> tuple[Request, int]:
    """Give every tool-call id Mistral's 9-character alphanumeric form, the same way in calls and results."""
    return _edit_messages(request, _map_message_ids)


def _map_message_ids(message: dict[str, Any]) -> tuple[dict[str, Any], int]:
    count = 0
    call_id = message.get("tool_call_id")
    if isinstance(call_id, str) and not MISTRAL_ID.match(call_id):
        message = {**message, "tool_call_id": mistral_tool_call_id(call_id)}
        count += 1
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        mapped = [_map_call_id(call) for call in calls]
        count += sum(changed for _, changed in mapped)
        message = {**message, "tool_calls": [call for call, _ in mapped]}
    return message, count


def _map_call_id(call: Any) -> tuple[Any, int]:
    if isinstance(call, dict) and isinstance(call.get("id"), str) and not MISTRAL_ID.match(call["id"]):
        return {**call, "id": mistral_tool_call_id(call["id"])}, 1
    return call, 0


def mistral_tool_call_id(original: str) -> str:
    """A stable 9-character [A-Za-z0-9] id from a hash of the whole id (truncation would collide)."""
    number = int.from_bytes(hashlib.sha256(original.encode()).digest()[:8], "big")
    digits = []
    for _ in range(9):
        number, remainder = divmod(number, 62)
        digits.append(_BASE62[remainder])
    return "".join(digits)


def _edit_messages(
    request: Request, edit: Callable[[dict[str, Any]], tuple[dict[str, Any], int]]
) -> tuple[Request, int]:
    messages = request.get("messages")
    if not isinstance(messages, list):
        return request, 0
    edited = [edit(m) if isinstance(m, dict) else (m, 0) for m in messages]
    changed = sum(count for _, count in edited)
    return ({**request, "messages": [m for m, _ in edited]}, changed) if changed else (request, 0)


def _edit_tool_calls(
    request: Request, edit: Callable[[dict[str, Any]], tuple[dict[str, Any], int]]
) -> tuple[Request, int]:
    def edit_message(message: dict[str, Any]) -> tuple[dict[str, Any], int]:
        calls = message.get("tool_calls")
        if not isinstance(calls, list):
            return message, 0
        edited = [edit(call) if isinstance(call, dict) else (call, 0) for call in calls]
        changed = sum(count for _, count in edited)
        return ({**message, "tool_calls": [c for c, _ in edited]}, changed) if changed else (message, 0)

    return _edit_messages(request, edit_message)


MISTRAL = frozenset({"mistral"})
# Order matters: ids and arguments are fixed before empty messages are judged.
REPAIRS = (
    RepairKind("tool_choice_without_tools", None, drop_tool_choice_without_tools),
    RepairKind("empty_tools", None, drop_empty_tools),
    RepairKind("tool_call_index", MISTRAL, drop_tool_call_index, accepted_since="0.32.0"),
    RepairKind("malformed_tool_arguments", MISTRAL, fix_malformed_tool_arguments, accepted_since="0.32.0"),
    RepairKind("tool_call_id_format", MISTRAL, map_tool_call_ids, accepted_since="0.32.0"),
    RepairKind("empty_assistant_message", MISTRAL, drop_empty_assistant_messages),
)


def repairs_for(family: str, vllm_version: str | None) -> tuple[RepairKind, ...]:
    """The repairs a deployment needs: its family's, minus those its vLLM version accepts raw.

    An unknown version gets every repair of the family: all are harmless to a version that accepts the raw form.
    """
    return tuple(
        kind
        for kind in REPAIRS
        if (kind.families is None or family in kind.families)
        and not (
            vllm_version and kind.accepted_since and version_tuple(vllm_version) >= version_tuple(kind.accepted_since)
        )
    )


def apply_repairs(request: Request, kinds: tuple[RepairKind, ...]) -> tuple[Request, dict[str, int]]:
    counts: dict[str, int] = {}
    for kind in kinds:
        request, changed = kind.repair(request)
        if changed:
            counts[kind.name] = changed
    return request, counts
