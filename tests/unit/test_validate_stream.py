"""Reassembling a streamed chat completion from its events."""

from __future__ import annotations

import json
from typing import Any

from tokengate.validate.endpoint import parse_counters
from tokengate.validate.stream import assemble


def events(*chunks: dict[str, Any] | str) -> list[tuple[float, str]]:
    return [(float(10 * i), c if isinstance(c, str) else json.dumps(c)) for i, c in enumerate(chunks)]


def delta(**fields: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": fields, "finish_reason": None}]}


def test_role_deltas_finish_usage_and_done() -> None:
    stream = assemble(
        events(
            delta(role="assistant", content=""),
            delta(reasoning="let "),
            delta(reasoning="me"),
            delta(content="Hi"),
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
            {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}},
            "[DONE]",
        )
    )
    assert stream.role == "assistant"
    assert (stream.reasoning, stream.content) == ("let me", "Hi")
    assert (stream.reasoning_deltas, stream.content_deltas) == (2, 1)
    assert stream.finish_reason == "length"
    assert stream.usage == {"prompt_tokens": 5, "completion_tokens": 3}
    assert stream.done
    assert stream.time_to_first_token_ms == 0.0  # vLLM sends the role chunk with the first token


def test_a_stream_whose_tokens_decode_to_no_text_still_has_a_time_to_first_token() -> None:
    """Before: TTFT waited for a delta with text; two random-weight tokens that were partial UTF-8 bytes left it
    None, and the prefix-cache check reported no TTFT (a live-test flake)."""
    stream = assemble(events(delta(role="assistant", content=""), delta(content=""),
                             {"choices": [], "usage": {"completion_tokens": 2}}, "[DONE]"))  # fmt: skip
    assert stream.time_to_first_token_ms == 0.0
    assert stream.content_deltas == 0


def test_tool_call_pieces_are_joined_by_index() -> None:
    stream = assemble(
        events(
            delta(tool_calls=[{"index": 0, "id": "abc", "function": {"name": "get_weather"}}]),
            delta(tool_calls=[{"index": 1, "id": "def", "function": {"name": "get_time", "arguments": "{}"}}]),
            delta(tool_calls=[{"index": 0, "function": {"arguments": '{"city": '}}]),
            delta(tool_calls=[{"index": 0, "function": {"arguments": '"Rome"}'}}]),
        )
    )
    assert [(c.id, c.name, c.arguments) for c in stream.tool_calls] == [
        ("abc", "get_weather", '{"city": "Rome"}'),
        ("def", "get_time", "{}"),
    ]
    assert not stream.done


def test_an_error_event_is_kept() -> None:
    stream = assemble(events(delta(role="assistant"), {"error": {"message": "engine died"}}))
    assert stream.error == "engine died"


def test_reasoning_content_is_the_older_name_for_reasoning() -> None:
    assert assemble(events(delta(reasoning_content="hmm"))).reasoning == "hmm"


def test_prometheus_counters_are_summed_over_labels() -> None:
    text = (
        "# HELP vllm:prefix_cache_hits_total hits\n"
        'vllm:prefix_cache_hits_total{engine="0",model_name="a"} 512.0\n'
        'vllm:prefix_cache_hits_total{engine="1",model_name="a"} 128.0\n'
        "process_open_fds 12\n"
    )
    assert parse_counters(text) == {"vllm:prefix_cache_hits_total": 640.0, "process_open_fds": 12.0}
