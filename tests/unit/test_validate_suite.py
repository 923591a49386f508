"""The validate suite's own logic, against a stand-in OpenAI server on httpx.MockTransport.

What vLLM really answers is proven in tests/live/test_validate_live.py; here the stub isolates our decisions:
which checks run, what counts as pass/fail/skip, and which fix is named.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tokengate.validate import EngineFacts, Parsers, Status, Target, ValidationReport, planned_checks, validate
from tokengate.validate.checks.reasoning import _think_block, _unparsed

AUTO_REFUSED = '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'


@dataclass
class FakeServer:
    """Answers like vLLM 0.32 in shape, with switches for the misconfigurations the checks must notice."""

    model: str = "m"
    max_model_len: int | None = 8192
    reasoning: bool = True
    think_tags_in_content: bool = False
    auto_tools: bool = True
    prefix_caching: bool = True
    vllm_metrics: bool = True
    cached_tokens: bool = False
    healthy: bool = True
    limit_status: int = 400
    refuse_empty_assistant: bool = False
    hits: float = 0.0
    queries: float = 0.0
    seen_prompts: set[str] = field(default_factory=set)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/health":
            return httpx.Response(200 if self.healthy else 503, text="" if self.healthy else "engine dead")
        if path == "/v1/models":
            entry: dict[str, Any] = {"id": self.model, "object": "model"}
            if self.max_model_len:
                entry["max_model_len"] = self.max_model_len
            return httpx.Response(200, json={"object": "list", "data": [entry]})
        if path == "/tokenize":
            return httpx.Response(200, json={"count": len(json.loads(request.content)["prompt"].split())})
        if path == "/metrics":
            return httpx.Response(200, text=self.metrics_text())
        body = json.loads(request.content)
        self.requests.append(body)
        return self.chat(body)

    def metrics_text(self) -> str:
        if not self.vllm_metrics:
            return "tokengate_requests_total 3.0\n"
        labels = '{engine="0",model_name="m"}'
        return (
            f"vllm:prefix_cache_queries_total{labels} {self.queries}\n"
            f"vllm:prefix_cache_hits_total{labels} {self.hits}\n"
            f'vllm:cache_config_info{{block_size="128",enable_prefix_caching="{self.prefix_caching}"}} 1.0\n'
        )

    def chat(self, body: dict[str, Any]) -> httpx.Response:
        prompt = " ".join(str(m.get("content") or "") for m in body["messages"])
        tokens = len(prompt.split())
        if self.max_model_len and tokens > self.max_model_len:
            return _error(self.limit_status, f"This model's maximum context length is {self.max_model_len} tokens.")
        choice = body.get("tool_choice", "auto" if body.get("tools") else None)
        if choice is not None and not self.auto_tools:
            named = isinstance(choice, dict)
            return _error(
                400, 'tool_choice=function "x" requires --tool-call-parser to be set' if named else AUTO_REFUSED
            )
        if self.refuse_empty_assistant and any(
            m.get("role") == "assistant" and m.get("content") == "" for m in body["messages"]
        ):
            return _error(400, "Assistant message must have either content or tool_calls, but not both.")
        cached = self.count_prefix(prompt, tokens)
        message = self.message(body)
        usage: dict[str, Any] = {"prompt_tokens": tokens, "completion_tokens": 3, "total_tokens": tokens + 3}
        if self.cached_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        if body.get("stream"):
            return httpx.Response(200, text=_sse(message, usage, body), headers={"content-type": "text/event-stream"})
        finish = "tool_calls" if message.get("tool_calls") else "length"
        return httpx.Response(
            200, json={"choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}
        )

    def count_prefix(self, prompt: str, tokens: int) -> int:
        self.queries += tokens
        if not self.prefix_caching or prompt not in self.seen_prompts:
            self.seen_prompts.add(prompt)
            return 0
        self.hits += tokens
        return tokens

    def message(self, body: dict[str, Any]) -> dict[str, Any]:
        if isinstance(body.get("tool_choice"), dict):
            call = {
                "id": "abcdefghi",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
            }
            return {"role": "assistant", "content": "", "tool_calls": [call]}
        thinking = (body.get("chat_template_kwargs") or {}).get("enable_thinking", True)
        if self.think_tags_in_content:
            return {"role": "assistant", "content": "<think>hmm</think> 95 minutes"}
        if self.reasoning and thinking:
            return {"role": "assistant", "content": None, "reasoning": "let me think"}
        return {"role": "assistant", "content": "hello there"}


def _error(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"message": message, "type": "BadRequestError", "code": status}})


def _sse(message: dict[str, Any], usage: dict[str, Any], body: dict[str, Any]) -> str:
    chunks: list[dict[str, Any]] = [{"delta": {"role": "assistant", "content": ""}}]
    for call in message.get("tool_calls") or []:
        chunks.append({"delta": {"tool_calls": [{"index": 0, "id": call["id"], "function": {"name": "get_weather"}}]}})
        for piece in ('{"city"', ': "Ro', 'me"}'):
            chunks.append({"delta": {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}})
    for key in ("content", "reasoning"):
        for word in (message.get(key) or "").split():
            chunks.append({"delta": {key: word + " "}})
    chunks.append({"delta": {}, "finish_reason": "stop"})
    events = [{"choices": [{"index": 0, **chunk}]} for chunk in chunks]
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append({"choices": [], "usage": usage})
    return "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"


def run(server: FakeServer, **target: Any) -> ValidationReport:
    fields: dict[str, Any] = {"name": "t", "base_url": "http://engine:8000", "model": "m", "family": "qwen3"}
    return validate([Target(**(fields | target))], transport=server.transport())


def results(report: ValidationReport) -> dict[str, Any]:
    return {result.check: result for result in report.results}


def test_a_well_configured_qwen3_engine_passes_every_check() -> None:
    report = run(FakeServer())
    assert report.ok, [(r.check, r.reason) for r in report.results if r.status is not Status.PASS]
    found = results(report)
    assert list(found) == [
        "liveness.health",
        "liveness.models",
        "chat.basic",
        "chat.stream",
        "reasoning.on",
        "reasoning.off",
        "tools.named",
        "tools.named_stream",
        "tools.auto",
        "tools.round_trip",
        "prefix_cache.hit",
        "limits.context",
    ]
    assert found["prefix_cache.hit"].evidence["evidence"] == "engine /metrics vllm:prefix_cache_hits_total"
    assert found["limits.context"].evidence["max_model_len"] == 8192


def test_the_round_trip_replays_the_call_the_server_made() -> None:
    server = FakeServer()
    run(server)
    replayed = [b for b in server.requests if any(m.get("role") == "tool" for m in b["messages"])]
    assert replayed[0]["messages"][2]["tool_call_id"] == "abcdefghi"


def test_auto_tool_choice_off_fails_every_tool_check_naming_the_flag_and_the_fleet_field() -> None:
    engine = EngineFacts(tool_call_parser="hermes", reasoning_parser="qwen3", max_model_len=8192)
    report = run(FakeServer(auto_tools=False), deployment="medium", engine=engine)
    found = results(report)
    for name in ("tools.named", "tools.named_stream", "tools.auto", "tools.round_trip"):
        assert found[name].status is Status.FAIL
        assert "--enable-auto-tool-choice" in found[name].fix
        assert "engine_args of medium: enable-auto-tool-choice: true, tool-call-parser: hermes" in found[name].fix
    assert AUTO_REFUSED in found["tools.auto"].reason
    assert not report.ok


def test_a_deployment_without_a_tool_parser_skips_tools_with_the_flags_to_serve_them() -> None:
    report = run(FakeServer(), engine=EngineFacts(), recommended=Parsers(tool_call_parser="hermes"))
    tool_results = [r for r in report.results if r.check.startswith("tools.")]
    assert {r.status for r in tool_results} == {Status.SKIP}
    assert "--tool-call-parser hermes --enable-auto-tool-choice" in tool_results[0].fix


def test_prefix_caching_off_fails_naming_the_flag_with_both_timings() -> None:
    found = results(run(FakeServer(prefix_caching=False)))
    hit = found["prefix_cache.hit"]
    assert hit.status is Status.FAIL
    assert "--enable-prefix-caching" in hit.fix
    assert "enable_prefix_caching=False" in hit.reason
    assert hit.evidence["hit_tokens"] == 0
    assert len(hit.evidence["time_to_first_token_ms"]) == 2


def test_through_a_gateway_the_engine_metrics_are_read_at_the_engine_url() -> None:
    server = FakeServer()
    found = results(run(server, base_url="http://gateway:8080", via_gateway=True, engine_url="http://engine:8000"))
    assert found["prefix_cache.hit"].status is Status.PASS
    assert found["prefix_cache.hit"].evidence["hit_tokens"] > 0


def test_without_engine_metrics_cached_tokens_are_the_evidence() -> None:
    server = FakeServer(vllm_metrics=False, cached_tokens=True)
    found = results(run(server, base_url="http://gateway:8080", via_gateway=True))
    assert found["prefix_cache.hit"].status is Status.PASS
    assert found["prefix_cache.hit"].evidence["evidence"] == "usage.prompt_tokens_details.cached_tokens"


def test_with_no_evidence_at_all_the_prefix_check_skips_and_says_how_to_get_some() -> None:
    found = results(run(FakeServer(vllm_metrics=False), base_url="http://gateway:8080", via_gateway=True))
    assert found["prefix_cache.hit"].status is Status.SKIP
    assert "--enable-prompt-tokens-details" in found["prefix_cache.hit"].fix


def test_an_unhealthy_engine_fails_liveness_and_skips_the_rest() -> None:
    report = run(FakeServer(healthy=False))
    assert report.results[0].status is Status.FAIL
    assert "503" in report.results[0].reason
    assert {r.status for r in report.results[1:]} == {Status.SKIP}


def test_an_unreachable_server_fails_with_its_address() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    report = validate([Target(name="t", base_url="http://nowhere:9", model="m")], transport=httpx.MockTransport(refuse))
    assert report.results[0].status is Status.FAIL
    assert "cannot reach http://nowhere:9" in report.results[0].reason
    assert "tokengate status" in report.results[0].fix


def test_a_model_the_server_does_not_list_fails_with_the_listed_names() -> None:
    found = results(run(FakeServer(model="other")))
    assert found["liveness.models"].status is Status.FAIL
    assert "it lists: other" in found["liveness.models"].reason


def test_a_500_on_an_over_long_prompt_fails_and_a_400_passes() -> None:
    assert results(run(FakeServer(limit_status=500)))["limits.context"].status is Status.FAIL
    assert results(run(FakeServer(limit_status=400)))["limits.context"].status is Status.PASS


def test_unknown_max_model_len_skips_the_limit_check_unless_the_engine_args_give_it() -> None:
    assert results(run(FakeServer(max_model_len=None)))["limits.context"].status is Status.SKIP
    known = run(FakeServer(max_model_len=None), engine=EngineFacts(max_model_len=4096))
    assert results(known)["liveness.models"].reason.endswith("max_model_len 4096 (engine args)")


def test_think_tags_in_the_content_fail_naming_the_reasoning_parser() -> None:
    found = results(run(FakeServer(think_tags_in_content=True), recommended=Parsers(reasoning_parser="qwen3")))
    assert found["reasoning.on"].status is Status.FAIL
    assert "--reasoning-parser qwen3" in found["reasoning.on"].fix


def test_a_bare_url_without_reasoning_skips_the_reasoning_checks() -> None:
    found = results(run(FakeServer(reasoning=False)))
    assert found["reasoning.on"].status is Status.SKIP
    assert found["reasoning.off"].status is Status.SKIP


@pytest.mark.parametrize(
    ("family", "via_gateway", "expected"),
    [
        (
            "mistral",
            True,
            {
                "mistral.tool_call_index",
                "mistral.malformed_tool_arguments",
                "mistral.empty_assistant_message",
                "mistral.tool_call_id_format",
                "mistral.tool_choice_without_tools",
            },
        ),
        ("mistral", False, {"mistral.repairs"}),
        ("qwen3", True, set()),
    ],
)
def test_mistral_repair_cases_are_planned_only_for_mistral(family: str, via_gateway: bool, expected: set[str]) -> None:
    target = Target(name="t", base_url="http://x", model="m", family=family, via_gateway=via_gateway)
    planned = {check.name for check in planned_checks(target)}
    assert {name for name in planned if name.startswith("mistral.")} == expected
    assert ("reasoning.off" in planned) is (family == "qwen3")


def test_mistral_targets_never_get_chat_template_kwargs() -> None:
    server = FakeServer(reasoning=False)
    run(server, family="mistral")
    assert all("chat_template_kwargs" not in body for body in server.requests)


def test_a_mistral_case_the_gateway_did_not_repair_fails_naming_the_family_setting() -> None:
    report = run(FakeServer(refuse_empty_assistant=True), family="mistral", via_gateway=True, deployment="devstral")
    found = results(report)
    assert found["mistral.empty_assistant_message"].status is Status.FAIL
    assert "family: mistral on deployment devstral" in found["mistral.empty_assistant_message"].fix
    assert found["mistral.tool_call_index"].status is Status.PASS


@pytest.mark.parametrize(
    ("content", "reasoning", "block", "unparsed"),
    [
        ("<think>let me see</think> 95 minutes", "", True, True),
        ("  <think>\nlet me see", "", True, True),
        ("let me see</think> 95 minutes", "", False, True),  # the template opened the block in the prompt
        ("an answer with a stray <think> token", "", False, False),  # random weights do this now and then
        ("after</think> more", "thinking", False, False),
        ("95 minutes", "", False, False),
    ],
)
def test_what_counts_as_thinking_left_in_the_content(content: str, reasoning: str, block: bool, unparsed: bool) -> None:
    assert _think_block(content) is block
    assert _unparsed(content, reasoning) is unparsed
