"""Each repair, the vLLM or mistral_common error it prevents, and that it leaves its input alone."""

from __future__ import annotations

import copy
import re
from importlib import resources
from typing import Any

import pytest
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

from tokengate.gateway.repairs import (
    apply_repairs,
    drop_empty_assistant_messages,
    drop_tool_call_index,
    drop_tool_choice_without_tools,
    fix_malformed_tool_arguments,
    map_tool_call_ids,
    mistral_tool_call_id,
    repairs_for,
)

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def call(call_id: str = "abcDEF123", arguments: str = '{"city": "Paris"}', **extra: Any) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}, **extra}


def conversation(tool_call: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [tool_call]},
        {"role": "tool", "tool_call_id": tool_call["id"], "content": "21C"},
    ]


@pytest.fixture(scope="module")
def tekken() -> MistralTokenizer:
    path = resources.files("mistral_common") / "data" / "tekken_240718.json"
    return MistralTokenizer.from_file(str(path))


def mistral_common_accepts(messages: list[dict[str, Any]], tekken: MistralTokenizer) -> bool:
    """The validation older vLLM versions ran on Mistral requests: strict parsing, then encoding."""
    try:
        ChatCompletionRequest.model_validate({"messages": messages, "tools": TOOLS})
        tekken.encode_chat_completion(ChatCompletionRequest.from_openai(messages=messages, tools=TOOLS))
    except Exception:
        return False
    return True


def test_tool_choice_without_tools_is_dropped() -> None:
    """vLLM: 400 "When using `tool_choice`, `tools` must be set." """
    request = {"model": "m", "messages": [], "tool_choice": "auto"}
    repaired, changed = drop_tool_choice_without_tools(request)
    assert changed == 1
    assert "tool_choice" not in repaired
    assert drop_tool_choice_without_tools({**request, "tools": TOOLS}) == ({**request, "tools": TOOLS}, 0)


def test_empty_tools_are_dropped() -> None:
    """vLLM: 400 "`tools` must not be an empty array" (seed case 5: tool_choice with tools: [])."""
    request = {"model": "m", "messages": [], "tools": [], "tool_choice": "auto"}
    repaired, counts = apply_repairs(request, repairs_for("qwen3", None))
    assert repaired == {"model": "m", "messages": []}
    assert counts == {"tool_choice_without_tools": 1, "empty_tools": 1}


def test_empty_assistant_messages_are_dropped(tekken: MistralTokenizer) -> None:
    """vLLM 0.32 and mistral_common: "Assistant message must have either content or tool_calls, but not both." """
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "again"},
    ]
    assert not mistral_common_accepts(messages, tekken)
    repaired, changed = drop_empty_assistant_messages({"messages": messages})
    assert changed == 1
    assert mistral_common_accepts(repaired["messages"], tekken)
    kept = [{"role": "assistant", "content": None, "tool_calls": [call()]}]
    assert drop_empty_assistant_messages({"messages": kept}) == ({"messages": kept}, 0)


def test_index_in_replayed_tool_calls_is_dropped(tekken: MistralTokenizer) -> None:
    """mistral_common: `index` is an extra input not permitted in a tool call."""
    messages = conversation(call(index=0))
    assert not mistral_common_accepts(messages, tekken)
    repaired, changed = drop_tool_call_index({"messages": messages})
    assert changed == 1
    assert mistral_common_accepts(repaired["messages"], tekken)


def test_malformed_arguments_become_an_empty_object() -> None:
    """vLLM's chat template path json.loads the arguments of replayed tool calls."""
    request = {"messages": conversation(call(arguments="{ invalid json"))}
    repaired, changed = fix_malformed_tool_arguments(request)
    assert changed == 1
    assert repaired["messages"][1]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert fix_malformed_tool_arguments({"messages": conversation(call())})[1] == 0
    assert fix_malformed_tool_arguments({"messages": conversation(call(arguments="[1, 2]"))})[1] == 1


def test_long_tool_call_ids_map_to_nine_alphanumerics(tekken: MistralTokenizer) -> None:
    """mistral_common: "Tool call id was toolu_01ABC123XYZ but must be a-z, A-Z, 0-9, with a length of 9." """
    messages = conversation(call("toolu_01ABC123XYZ"))
    assert not mistral_common_accepts(messages, tekken)
    repaired, changed = map_tool_call_ids({"messages": messages})
    assert changed == 2  # the call and its result
    new_id = repaired["messages"][1]["tool_calls"][0]["id"]
    assert re.fullmatch(r"[A-Za-z0-9]{9}", new_id)
    assert repaired["messages"][2]["tool_call_id"] == new_id
    assert mistral_common_accepts(repaired["messages"], tekken)


def test_ids_sharing_their_last_nine_characters_do_not_collide() -> None:
    assert mistral_tool_call_id("toolu_01ABC123XYZ") != mistral_tool_call_id("toolu_99ABC123XYZ")
    assert mistral_tool_call_id("toolu_01ABC123XYZ") == mistral_tool_call_id("toolu_01ABC123XYZ")
    assert map_tool_call_ids({"messages": conversation(call("abcDEF123"))})[1] == 0  # valid ids stay


def test_repairs_never_mutate_their_input() -> None:
    request = {
        "model": "m",
        "messages": [*conversation(call("toolu_1", arguments="{oops", index=0)), {"role": "assistant", "content": ""}],
        "tools": [],
        "tool_choice": "auto",
    }
    before = copy.deepcopy(request)
    repaired, counts = apply_repairs(request, repairs_for("mistral", None))
    assert request == before
    assert set(counts) == {
        "tool_choice_without_tools", "empty_tools", "tool_call_index", "malformed_tool_arguments",
        "tool_call_id_format", "empty_assistant_message",
    }  # fmt: skip
    assert repaired != before


def test_repairs_depend_on_family_and_version() -> None:
    assert {k.name for k in repairs_for("qwen3", None)} == {"tool_choice_without_tools", "empty_tools"}
    on_032 = {k.name for k in repairs_for("mistral", "0.32.0")}
    assert on_032 == {"tool_choice_without_tools", "empty_tools", "empty_assistant_message"}
    assert len(repairs_for("mistral", "0.9.2")) == 6
