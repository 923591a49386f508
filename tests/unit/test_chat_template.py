"""The qwen3 tiny model's chat template, rendered the way transformers renders it."""

from __future__ import annotations

import json
from importlib import resources

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATE = (resources.files("tokengate.testing") / "templates" / "qwen3_chat_template.jinja").read_text()
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def render(messages: list[dict], **kwargs: object) -> str:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda value: json.dumps(value, ensure_ascii=False)
    return env.from_string(TEMPLATE).render(messages=messages, **kwargs)


def test_plain_conversation_with_generation_prompt() -> None:
    text = render(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        add_generation_prompt=True,
    )
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_thinking_off_puts_an_empty_think_block_in_the_prompt() -> None:
    text = render([{"role": "user", "content": "Hi"}], add_generation_prompt=True, enable_thinking=False)
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_tools_are_listed_in_the_system_turn() -> None:
    text = render([{"role": "user", "content": "Hi"}], tools=[TOOL])
    assert text.startswith("<|im_start|>system\n# Tools")
    assert json.dumps(TOOL) in text
    assert "<tool_call>" in text


@pytest.mark.parametrize("arguments", ['{"city": "Paris"}', {"city": "Paris"}])
def test_tool_calls_and_results_round_trip(arguments: object) -> None:
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": arguments}},
        ]},
        {"role": "tool", "tool_call_id": "a", "content": "21C"},
        {"role": "tool", "tool_call_id": "b", "content": "sunny"},
    ]  # fmt: skip
    text = render(messages)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>' in text
    # Consecutive tool results share one user turn.
    assert text.endswith(
        "<|im_start|>user\n<tool_response>\n21C\n</tool_response>\n<tool_response>\nsunny\n</tool_response><|im_end|>\n"
    )


def test_content_parts_and_reasoning_are_rendered() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": "Hello", "reasoning_content": "greet back"},
    ]
    text = render(messages)
    assert "<|im_start|>user\nHi there<|im_end|>" in text
    assert "<|im_start|>assistant\n<think>\ngreet back\n</think>\n\nHello<|im_end|>" in text
