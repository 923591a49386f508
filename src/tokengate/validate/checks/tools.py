"""Tools: a named tool choice (plain and streamed) returns schema-valid arguments; "auto" is accepted;
an assistant tool call plus its result is accepted as the next turn."""

from __future__ import annotations

import json
from typing import Any

from tokengate.validate.arguments import argument_errors
from tokengate.validate.check import Check
from tokengate.validate.endpoint import Reply
from tokengate.validate.fixes import start_vllm_with, tool_parser_flag
from tokengate.validate.probe import Probe
from tokengate.validate.result import Outcome, Status, clip
from tokengate.validate.stream import ToolCall

# Enum-only, strict arguments: even random weights finish a forced call in a few tokens.
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
SCHEMA: dict[str, Any] = WEATHER_TOOL["function"]["parameters"]
NAMED = {"type": "function", "function": {"name": "get_weather"}}
PROMPT = "What is the weather in Rome?"
MAX_TOKENS = 96
SEED = 0  # greedy decoding of a tiny random model can loop on whitespace; this seed finishes (DEVELOPERS.md)
FALLBACK_CALL_ID = "c4ll0Weat"  # 9 alphanumerics: valid for every family
_PARSER_MISMATCH = "the tool parser does not match the model: "


def _not_served(probe: Probe) -> Outcome | None:
    engine = probe.target.engine
    if engine is not None and not engine.tool_call_parser:
        return Outcome.skipped(
            "no --tool-call-parser in the engine args: this deployment does not serve tool calls",
            "to serve them, "
            + start_vllm_with(probe.target, tool_parser_flag(probe.target), "--enable-auto-tool-choice"),
        )
    return None


def _refused(probe: Probe, reply: Reply, what: str) -> Outcome:
    reason = f"{what} answered {reply.status}: {reply.error}"
    if "--enable-auto-tool-choice" in reply.error or "--tool-call-parser" in reply.error:
        return Outcome.failed(
            reason,
            start_vllm_with(probe.target, "--enable-auto-tool-choice", tool_parser_flag(probe.target))
            + "; vLLM loads the tool parser only when --enable-auto-tool-choice is set",
        )
    return Outcome.failed(reason, "read the engine log for this request; the message above is the server's")


def _judge(probe: Probe, call: ToolCall | None, finish_reason: str | None, content: str) -> Outcome:
    if call is None:
        return Outcome.failed(
            f"no tool call in the answer (finish_reason {finish_reason}, content {clip(content, 80)!r})",
            _PARSER_MISMATCH + start_vllm_with(probe.target, tool_parser_flag(probe.target)),
        )
    if call.name != "get_weather":
        return Outcome.failed(
            f"the call names {call.name!r}, not the forced get_weather",
            _PARSER_MISMATCH + start_vllm_with(probe.target, tool_parser_flag(probe.target)),
        )
    errors = argument_errors(call.arguments, SCHEMA)
    if errors:
        ran_out = " (max_tokens ran out first)" if finish_reason == "length" else ""
        return Outcome.failed(
            f"arguments {clip(call.arguments, 120)!r} break the tool's schema{ran_out}: {'; '.join(errors)}",
            "constrain tool arguments to the schema: " + start_vllm_with(probe.target, "--tool-strict-level parameter"),
            arguments=call.arguments,
        )
    return Outcome.passed(
        f"get_weather({json.dumps(json.loads(call.arguments))}) matches the schema",
        arguments=call.arguments,
        id=call.id,
        finish_reason=finish_reason,
    )


def _forced(probe: Probe) -> dict[str, Any]:
    return probe.body(PROMPT, MAX_TOKENS, tools=[WEATHER_TOOL], tool_choice=NAMED, seed=SEED, **probe.thinking_off())


def named(probe: Probe) -> Outcome:
    if (skip := _not_served(probe)) is not None:
        return skip
    reply = probe.endpoint.chat(_forced(probe))
    if not reply.ok:
        return _refused(probe, reply, "a named tool_choice")
    calls = reply.message.get("tool_calls") or []
    call = None
    if calls:
        function = calls[0].get("function") or {}
        call = ToolCall(id=calls[0].get("id"), name=function.get("name"), arguments=function.get("arguments") or "")
    outcome = _judge(probe, call, reply.finish_reason, reply.message.get("content") or "")
    if call is not None and outcome.status is Status.PASS:
        probe.learned.tool_call = {
            "id": call.id or FALLBACK_CALL_ID,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
    return outcome


def named_stream(probe: Probe) -> Outcome:
    if (skip := _not_served(probe)) is not None:
        return skip
    reply, streamed = probe.endpoint.stream_chat(_forced(probe))
    if not reply.ok:
        return _refused(probe, reply, "a streamed named tool_choice")
    if streamed.error:
        return Outcome.failed(f"the stream ended with an error event: {streamed.error}", "read the engine log")
    call = streamed.tool_calls[0] if streamed.tool_calls else None
    outcome = _judge(probe, call, streamed.finish_reason, streamed.content)
    if outcome.status is Status.PASS:
        outcome.reason += " (from the stream's deltas)"
    return outcome


def auto(probe: Probe) -> Outcome:
    if (skip := _not_served(probe)) is not None:
        return skip
    reply = probe.endpoint.chat(probe.body(PROMPT, 8, tools=[WEATHER_TOOL], tool_choice="auto"))
    if not reply.ok:
        return _refused(probe, reply, 'tool_choice "auto"')
    made = "a tool call" if reply.message.get("tool_calls") else "text"
    return Outcome.passed(f'tool_choice "auto" accepted (answered with {made})')


def round_trip(probe: Probe) -> Outcome:
    if (skip := _not_served(probe)) is not None:
        return skip
    call = probe.learned.tool_call or {
        "id": FALLBACK_CALL_ID,
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
    }
    messages = [
        {"role": "user", "content": PROMPT},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": '{"temperature_c": 21, "sky": "clear"}'},
    ]
    body = {"model": probe.target.model, "messages": messages, "tools": [WEATHER_TOOL], "max_tokens": 8}
    reply = probe.endpoint.chat(body)
    if not reply.ok:
        return _refused(probe, reply, "assistant tool call + tool result")
    source = "the call it made" if probe.learned.tool_call else "a sample call"
    return Outcome.passed(f"the turn after {source} and its result was accepted", tool_call_id=call["id"])


CHECKS = (
    Check("tools.named", named),
    Check("tools.named_stream", named_stream),
    Check("tools.auto", auto),
    Check("tools.round_trip", round_trip),
)
