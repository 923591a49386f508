"""Anthropic Messages ↔ chat completions: the pure adapters and the prefix-cache preservation."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tokengate.gateway.anthropic import (
    TranslationError,
    chat_to_message,
    client_tool_id,
    engine_tool_id,
    messages_to_chat,
    thinking_switch,
)
from tokengate.gateway.anthropic_stream import MessageStream
from tokengate.gateway.prefix_cache import preserve_prefix
from tokengate.gateway.routing import Replica

TOOL_ID = "toolu_chatcmpl-tool-1"
TOOL = {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {}}}


def test_a_tool_loop_translates_to_chat_messages() -> None:
    chat = messages_to_chat(
        {
            "model": "m", "max_tokens": 10, "system": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
            "tools": [TOOL, {"type": "web_search_20250305", "name": "web_search"}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "stop_sequences": ["END"], "metadata": {"user_id": "u1"}, "top_k": 5,
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": TOOL_ID, "name": "get_weather", "input": {"city": "Rome"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": TOOL_ID, "content": "sunny", "is_error": True},
                    {"type": "text", "text": "thanks"},
                ]},
            ],
        }
    )  # fmt: skip
    assert chat["messages"] == [
        {"role": "system", "content": "A\nB"},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "chatcmpl-tool-1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
        ]},
        {"role": "tool", "tool_call_id": "chatcmpl-tool-1", "content": "Error: sunny"},
        {"role": "user", "content": "thanks"},
    ]  # fmt: skip
    assert [tool["function"]["name"] for tool in chat["tools"]] == ["get_weather"]  # server tools left out
    assert chat["tool_choice"] == "required"
    assert chat["parallel_tool_calls"] is False
    assert (chat["stop"], chat["user"], chat["top_k"], chat["max_tokens"]) == (["END"], "u1", 5, 10)
    assert "stream" not in chat


def test_named_tool_choice_images_and_streaming_options() -> None:
    chat = messages_to_chat(
        {"model": "m", "tools": [TOOL], "tool_choice": {"type": "tool", "name": "get_weather"},
         "messages": [{"role": "user", "content": [
             {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}},
             {"type": "text", "text": "what is it?"}]}]},
        stream=True,
    )  # fmt: skip
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["messages"][0]["content"][0] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}}
    assert chat["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}


@pytest.mark.parametrize(
    ("request_body", "field"),
    [
        ({"messages": "hi"}, "`messages`"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": [{"type": "video"}]}]}, "messages[0].content"),
        ({"messages": [], "tools": [TOOL], "tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
        ({"messages": [], "system": 3}, "`system`"),
    ],
)
def test_untranslatable_requests_name_the_field(request_body: dict[str, Any], field: str) -> None:
    with pytest.raises(TranslationError, match=field.replace("[", r"\[").replace("]", r"\]")):
        messages_to_chat(request_body)


def test_thinking_switch_only_for_families_whose_templates_take_it() -> None:
    disabled = {"thinking": {"type": "disabled"}}
    assert thinking_switch(disabled, "qwen3") == {"chat_template_kwargs": {"enable_thinking": False}}
    assert thinking_switch({"thinking": {"type": "enabled", "budget_tokens": 9}}, "qwen3") == {
        "chat_template_kwargs": {"enable_thinking": True}
    }
    assert thinking_switch(disabled, "mistral") == {}
    assert thinking_switch({}, "qwen3") == {}


def test_tool_ids_round_trip_and_foreign_ids_stay_paired() -> None:
    for engine_id in ("chatcmpl-tool-8f3a", "aB3dE5fG7", "call_1"):
        assert engine_tool_id(client_tool_id(engine_id)) == engine_id
        assert client_tool_id(engine_id).startswith("toolu_")
    assert engine_tool_id("toolu_01ABC123XYZ") == "01ABC123XYZ"  # a Claude id: same in tool_use and tool_result
    assert client_tool_id("bad id!") == "toolu_bad_id_"


def test_completion_becomes_a_message() -> None:
    completion = {
        "id": "chatcmpl-abc",
        "choices": [{"finish_reason": "tool_calls", "message": {
            "content": "Checking.", "reasoning": "think",
            "tool_calls": [{"id": "chatcmpl-tool-9", "function": {"name": "f", "arguments": "{\"a\": 1}"}},
                           {"id": "x", "function": {"name": "g", "arguments": "not json"}}]}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 64}},
    }  # fmt: skip
    message = chat_to_message(completion, model="alias")
    assert message["id"] == "msg_abc"
    assert message["model"] == "alias"
    assert [block["type"] for block in message["content"]] == ["thinking", "text", "tool_use", "tool_use"]
    assert message["content"][2] == {"type": "tool_use", "id": "toolu_chatcmpl-tool-9", "name": "f", "input": {"a": 1}}
    assert message["content"][3]["input"] == {}
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {
        "input_tokens": 36, "output_tokens": 7, "cache_read_input_tokens": 64, "cache_creation_input_tokens": 0
    }  # fmt: skip


@pytest.mark.parametrize(
    ("choice", "tool_calls", "expected"),
    [
        ({"finish_reason": "stop"}, False, ("end_turn", None)),
        ({"finish_reason": "stop", "stop_reason": "END"}, False, ("stop_sequence", "END")),
        ({"finish_reason": "stop", "stop_reason": 151645}, False, ("end_turn", None)),  # an EOS token id
        ({"finish_reason": "length"}, False, ("max_tokens", None)),
        ({"finish_reason": "stop"}, True, ("tool_use", None)),  # a named tool choice
        ({"finish_reason": "length"}, True, ("max_tokens", None)),  # a tool call cut short
    ],
)
def test_stop_reasons(choice: dict[str, Any], tool_calls: bool, expected: tuple[str, str | None]) -> None:
    message = {"content": "x", "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": "{}"}}]} if (
        tool_calls) else {"content": "x"}  # fmt: skip
    answer = chat_to_message({"choices": [{**choice, "message": message}]}, model="m", stop_sequences=["END"])
    assert (answer["stop_reason"], answer["stop_sequence"]) == expected


def _events(stream: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for raw in stream.split(b"\n\n"):
        if raw:
            kind, data = raw.split(b"\n", 1)
            events.append((kind.removeprefix(b"event: ").decode(), orjson.loads(data.removeprefix(b"data: "))))
    return events


def test_a_stream_of_reasoning_text_and_a_tool_call() -> None:
    usage = {"prompt_tokens": 20, "completion_tokens": 0}
    translator = MessageStream("m")
    out = (
        b"".join(
            translator.feed(chunk)
            for chunk in [
                {"id": "chatcmpl-1", "choices": [{"delta": {"role": "assistant"}}], "usage": usage},
                {"choices": [{"delta": {"reasoning": "hm"}}]},
                {"choices": [{"delta": {"content": "Hi"}}]},
                {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "t1", "function": {"name": "f"}}]}}]},
                {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}}]},
                {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}}]},
                {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]},
                {"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 5}},
            ]
        )
        + translator.end()
    )
    events = _events(out)
    assert [kind for kind, _ in events] == [
        "message_start", "ping",
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert events[0][1]["message"]["id"] == "msg_1"
    assert events[0][1]["message"]["usage"]["input_tokens"] == 20
    assert events[3][1]["delta"] == {"type": "thinking_delta", "thinking": "hm"}
    assert events[6][1]["delta"] == {"type": "text_delta", "text": "Hi"}
    assert events[8][1]["content_block"] == {"type": "tool_use", "id": "toolu_t1", "name": "f", "input": {}}
    assert "".join(e[1]["delta"]["partial_json"] for e in events[9:11]) == '{"a":1}'
    assert [e[1]["index"] for e in events if e[0] == "content_block_stop"] == [0, 1, 2]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert events[-2][1]["usage"]["output_tokens"] == 5


def test_an_empty_stream_still_ends_well_formed() -> None:
    translator = MessageStream("m")
    kinds = [kind for kind, _ in _events(translator.end())]
    assert kinds == ["message_start", "ping", "message_delta", "message_stop"]


def test_preservation_drops_billing_lines_anywhere_and_canonicalises_tools() -> None:
    billing = "x-anthropic-billing-header: cc_version=2.1.1.abc; cc_entrypoint=cli; cch=01234;"
    request = {
        "system": [{"type": "text", "text": billing}, {"type": "text", "text": f"Policy.\n{billing}\nRules."}],
        "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {"b": {}, "a": {}}}}],
    }
    preserved, removed = preserve_prefix(request)
    assert preserved["system"] == [{"type": "text", "text": "Policy.\nRules."}]
    assert removed == {"billing_header": 2}
    assert list(preserved["tools"][0]["input_schema"]["properties"]) == ["a", "b"]
    reordered = {**request, "tools": [{"input_schema": {"properties": {"a": {}, "b": {}}, "type": "object"},
                                       "name": "f"}]}  # fmt: skip
    assert orjson.dumps(preserve_prefix(reordered)[0]["tools"]) == orjson.dumps(preserved["tools"])
    assert request["system"][0]["text"] == billing  # the input is left alone
    assert preserve_prefix({"system": f"{billing}\nBe brief."})[0]["system"] == "Be brief."


def test_a_route_alias_reaches_the_engine_under_its_served_name() -> None:
    """vLLM answers 404 to a name it does not serve: a gateway route's alias must be rewritten."""
    replica = Replica(deployment="d", base_url="http://x", family="qwen3", repairs=(), served_names=("qwen3-8b",))
    assert replica.engine_model("coder") == "qwen3-8b"
    assert replica.engine_model("qwen3-8b") == "qwen3-8b"
