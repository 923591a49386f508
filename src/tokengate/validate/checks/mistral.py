"""Mistral through the gateway: the five requests the seeds' operator saw vLLM or mistral_common refuse.

Each must come back 200 through the gateway (its per-family repairs fix or drop the offending part).
Straight to the engine they are not expected to pass, so a direct target gets one skip.
"""

from __future__ import annotations

from typing import Any

from tokengate.validate.check import Check
from tokengate.validate.checks.tools import WEATHER_TOOL
from tokengate.validate.probe import Probe
from tokengate.validate.result import Outcome
from tokengate.validate.target import Target

MAX_TOKENS = 3
_USER = {"role": "user", "content": "Weather in Paris?"}


def _replayed_call(call: dict[str, Any], call_id: str) -> list[dict[str, Any]]:
    return [
        _USER,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": "21C"},
    ]


def _call(call_id: str, arguments: str, **extra: Any) -> dict[str, Any]:
    return {**extra, "id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}


# name -> (what it is, the request bodies without model and max_tokens)
CASES: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "tool_call_index": (
        "`index` inside a replayed tool call",
        [
            {
                "tools": [WEATHER_TOOL],
                "messages": _replayed_call(_call("a1b2c3d4e", '{"city": "Paris"}', index=0), "a1b2c3d4e"),
            }
        ],
    ),
    "malformed_tool_arguments": (
        "malformed JSON in replayed tool-call arguments",
        [{"tools": [WEATHER_TOOL], "messages": _replayed_call(_call("a1b2c3d4e", "{ invalid json"), "a1b2c3d4e")}],
    ),
    "empty_assistant_message": (
        "an assistant message with empty content",
        [
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": ""},
                    {"role": "user", "content": "again"},
                ]
            }
        ],
    ),
    "tool_call_id_format": (
        "a tool-call id longer than 9 alphanumerics (toolu_01ABC123XYZ)",
        [
            {
                "tools": [WEATHER_TOOL],
                "messages": _replayed_call(_call("toolu_01ABC123XYZ", '{"city": "Paris"}'), "toolu_01ABC123XYZ"),
            }
        ],
    ),
    "tool_choice_without_tools": (
        "tool_choice with tools: [] and with no tools",
        [{"messages": [_USER], "tools": [], "tool_choice": "auto"}, {"messages": [_USER], "tool_choice": "auto"}],
    ),
}


def _case(name: str) -> Check:
    description, bodies = CASES[name]

    def run(probe: Probe) -> Outcome:
        for body in bodies:
            reply = probe.endpoint.chat({"model": probe.target.model, "max_tokens": MAX_TOKENS, **body})
            if not reply.ok:
                where = (
                    f"family: mistral on deployment {probe.target.deployment}"
                    if probe.target.deployment
                    else ("family: mistral on the deployment")
                )
                return Outcome.failed(
                    f"{description}: the gateway answered {reply.status}: {reply.error}",
                    f"the gateway's mistral repairs did not apply: set `{where}` in the fleet file "
                    "(or leave vllm_version unset so every repair runs)",
                )
        return Outcome.passed(f"{description}: accepted")

    return Check(f"mistral.{name}", run, _through_gateway)


def _through_gateway(target: Target) -> bool:
    return target.family == "mistral" and target.via_gateway


def _direct(target: Target) -> bool:
    return target.family == "mistral" and not target.via_gateway


def direct(_probe: Probe) -> Outcome:
    return Outcome.skipped(
        "the seed's five Mistral repair cases apply through the gateway; vLLM 0.32 itself refuses two of them",
        "validate through the gateway too: tokengate validate --fleet FILE --gateway",
    )


CHECKS = (*(_case(name) for name in CASES), Check("mistral.repairs", direct, _direct))
