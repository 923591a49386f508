"""Anthropic's Messages API through the gateway, in front of real vLLM (CPU): the official SDK, tool use over
several turns, streaming, errors, token counting, and the prefix cache kept across agent turns."""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.live.test_gateway_live import RunningGateway
from tokengate.gateway.keys import KeyStore
from tokengate.testing.vllm_server import VllmServer, free_port

pytestmark = pytest.mark.live

# Enum-only, strict arguments: the only kind random weights finish (see DEVELOPERS.md).
WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city.",
    "strict": True,
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
FORCED = {"type": "tool", "name": "get_weather"}
# Qwen3 thinks first and the tool constraint starts only after thinking ends: switch it off, as a client would.
NO_THINKING: dict[str, Any] = {"thinking": {"type": "disabled"}}
RAW_ROUTE = "tiny-qwen3-raw"  # the same engine, with prefix-cache preservation switched off for this name


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, qwen3_server: VllmServer, mistral_server: VllmServer
) -> Iterator[tuple[RunningGateway, str]]:
    folder = tmp_path_factory.mktemp("anthropic")
    port = free_port()
    fleet = {
        "state_dir": str(folder / "state"),
        "deployments": [
            {"name": s.model_name, "model": s.model_name, "url": s.url, "served_model_name": s.model_name,
             "family": family}
            for s, family in ((qwen3_server, "qwen3"), (mistral_server, "mistral"))
        ],
        "gateway": {
            "listen": f"127.0.0.1:{port}",
            "routes": [
                {"model": RAW_ROUTE, "deployment": qwen3_server.model_name, "prefix_cache_preservation": False}
            ],
        },
    }  # fmt: skip
    fleet_file = folder / "fleet.yaml"
    fleet_file.write_text(yaml.safe_dump(fleet))
    key = KeyStore(folder / "state" / "gateway.sqlite3").create("agent")[0]
    running = RunningGateway(fleet_file, port)
    running.start()
    yield running, key
    running.stop()


def sdk(gateway: tuple[RunningGateway, str]) -> anthropic.Anthropic:
    running, key = gateway
    return anthropic.Anthropic(base_url=running.url, api_key=key, max_retries=0, timeout=120)  # sends x-api-key


def _extra(model: str) -> dict[str, Any]:
    return {"extra_body": {"seed": 0}, **(NO_THINKING if "qwen3" in model else {})}


@pytest.mark.parametrize("streaming", [False, True], ids=["sync", "stream"])
def test_agent_loop_with_tool_use(gateway: tuple[RunningGateway, str], any_server: VllmServer, streaming: bool) -> None:
    """Turn 1 forces a tool call; turn 2 replays it with its result; both through the official SDK."""
    client = sdk(gateway)
    model = any_server.model_name
    history: list[dict[str, Any]] = [{"role": "user", "content": "What is the weather in Paris?"}]

    def ask(**kwargs: Any) -> anthropic.types.Message:
        request = {"model": model, "max_tokens": 48, "messages": history, "tools": [WEATHER], **_extra(model), **kwargs}
        if not streaming:
            return client.messages.create(**request)
        with client.messages.stream(**request) as stream:
            return stream.get_final_message()

    first = ask(tool_choice=FORCED)
    calls = [block for block in first.content if block.type == "tool_use"]
    assert first.stop_reason == "tool_use"
    assert len(calls) == 1
    assert calls[0].id.startswith("toolu_")
    assert calls[0].name == "get_weather"
    assert calls[0].input in ({"city": "Paris"}, {"city": "Rome"})
    assert first.usage.input_tokens > 0

    history += [
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": calls[0].id, "content": [{"type": "text", "text": "Sunny, 21 C"}]},
            {"type": "text", "text": "And should I take an umbrella?"},
        ]},
    ]  # fmt: skip
    second = ask(max_tokens=6)
    assert second.stop_reason == "max_tokens"
    assert second.usage.output_tokens == 6
    assert second.usage.input_tokens > first.usage.input_tokens  # the tool call and its result reached the engine


def test_stream_events_arrive_in_anthropic_order(gateway: tuple[RunningGateway, str], qwen3_server: VllmServer) -> None:
    running, key = gateway
    body = {
        "model": qwen3_server.model_name, "max_tokens": 8, "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }  # fmt: skip
    kinds = []
    with httpx.stream("POST", f"{running.url}/v1/messages", json=body, headers={"x-api-key": key}, timeout=60) as r:
        assert r.status_code == 200
        kinds = [line.removeprefix("event: ") for line in r.iter_lines() if line.startswith("event: ")]
    assert kinds[:3] == ["message_start", "ping", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert "content_block_delta" in kinds
    # Thinking on (the default): the tiny model's tokens land in a thinking block, as vLLM's qwen3 parser says.
    final = sdk(gateway).messages.create(
        model=qwen3_server.model_name, max_tokens=8, messages=[{"role": "user", "content": "hi"}],
        thinking={"type": "enabled", "budget_tokens": 1024},
        extra_body={"seed": 0},  # a fixed sample: a random `</think>` token would open a text block
    )  # fmt: skip
    assert [block.type for block in final.content] == ["thinking"]
    assert final.stop_reason == "max_tokens"


def test_errors_are_anthropic_shaped(gateway: tuple[RunningGateway, str], qwen3_server: VllmServer) -> None:
    client = sdk(gateway)
    model = qwen3_server.model_name
    with pytest.raises(anthropic.BadRequestError) as too_long:
        client.messages.create(model=model, max_tokens=8, messages=[{"role": "user", "content": "word " * 9000}])
    assert too_long.value.body["type"] == "error"
    assert too_long.value.body["error"]["type"] == "invalid_request_error"
    assert too_long.value.body["error"]["message"].startswith("prompt is too long: ")
    assert "> 8192 maximum" in too_long.value.body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError) as unknown:
        client.messages.create(model="claude-opus-9", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert unknown.value.body["error"]["type"] == "not_found_error"
    assert "available:" in unknown.value.body["error"]["message"]
    bad_key = anthropic.Anthropic(base_url=gateway[0].url, api_key="tg-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as refused:
        bad_key.messages.create(model=model, max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert refused.value.body["error"]["type"] == "authentication_error"


def test_count_tokens_matches_what_the_engine_then_reports(
    gateway: tuple[RunningGateway, str], any_server: VllmServer
) -> None:
    client = sdk(gateway)
    request: dict[str, Any] = {
        "model": any_server.model_name, "system": "You are terse.", "tools": [WEATHER],
        "messages": [{"role": "user", "content": "Count these words, please."}],
    }  # fmt: skip
    counted = client.messages.count_tokens(**request)
    answered = client.messages.create(max_tokens=1, **request)
    assert counted.input_tokens == answered.usage.input_tokens + answered.usage.cache_read_input_tokens


def _prefix_cache_counters(server: VllmServer) -> tuple[float, float]:
    """(queries, hits) in tokens, from the engine's /metrics."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    totals = {"vllm:prefix_cache_queries_total": 0.0, "vllm:prefix_cache_hits_total": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
    return totals["vllm:prefix_cache_queries_total"], totals["vllm:prefix_cache_hits_total"]


def _counters_after(server: VllmServer, queries_before: float) -> tuple[float, float]:
    """The counters once the last request is in them: vLLM publishes engine stats a little after answering."""
    deadline = time.monotonic() + 30
    while True:
        queries, hits = _prefix_cache_counters(server)
        if queries > queries_before or time.monotonic() > deadline:
            return queries, hits
        time.sleep(0.2)


def _agent_turns(client: anthropic.Anthropic, model: str, server: VllmServer) -> float:
    """Two turns of an agent whose system prompt carries Claude Code's billing line, with a new nonce each turn
    (as Claude Code sends it); returns the engine's prefix-cache hits (tokens) during the second turn.

    The line follows an operator's block here: vLLM 0.32 drops the line by itself when it opens the system
    prompt (see the test below), but not elsewhere; the gateway drops it wherever it is."""
    instructions = f"Session {secrets.token_hex(8)}. " + " ".join(
        f"Rule {n}: keep answers short, cite files by path, never invent APIs." for n in range(40)
    )  # several 128-token blocks, unique to this run

    def system() -> list[dict[str, str]]:
        nonce = secrets.token_hex(3)[:5]
        billing = f"x-anthropic-billing-header: cc_version=2.1.177.01c; cc_entrypoint=cli; cch={nonce};"
        return [{"type": "text", "text": "Operator policy: answer in English."}, {"type": "text", "text": billing},
                {"type": "text", "text": instructions}]  # fmt: skip

    history: list[dict[str, Any]] = [{"role": "user", "content": "List the files."}]
    queries, _ = _prefix_cache_counters(server)
    client.messages.create(model=model, max_tokens=4, system=system(), messages=history, tools=[WEATHER])
    history += [{"role": "assistant", "content": "Done."}, {"role": "user", "content": "Now open the first one."}]
    queries, hits_before = _counters_after(server, queries)
    client.messages.create(model=model, max_tokens=4, system=system(), messages=history, tools=[WEATHER])
    return _counters_after(server, queries)[1] - hits_before


def test_prefix_cache_hits_across_agent_turns_only_with_preservation(
    gateway: tuple[RunningGateway, str], qwen3_server: VllmServer
) -> None:
    client = sdk(gateway)
    preserved = _agent_turns(client, qwen3_server.model_name, qwen3_server)
    raw = _agent_turns(client, RAW_ROUTE, qwen3_server)
    assert preserved >= 3 * 128  # the whole shared system prompt, in 128-token CPU blocks
    assert raw == 0  # the nonce sits in the first block: nothing after it can be reused
    metrics = httpx.get(f"{gateway[0].url}/metrics", timeout=10).text
    assert 'tokengate_prefix_volatile_removed_total{kind="billing_header"} 2.0' in metrics


def test_vllm_032_drops_a_leading_billing_line_itself(qwen3_server: VllmServer) -> None:
    """The engine-side fact the test above works around: pins it, so a vLLM that changes it is noticed."""

    def tokens(nonce: str, *, before: str = "") -> list[int]:
        line = f"x-anthropic-billing-header: cc_version=2.1.177.01c; cc_entrypoint=cli; cch={nonce};"
        request = {"model": qwen3_server.model_name, "messages": [{"role": "system", "content": before + line}]}
        return httpx.post(f"{qwen3_server.url}/tokenize", json=request, timeout=30).json()["tokens"]

    assert tokens("abc12") == tokens("zzzzz")  # leading: dropped by the engine
    assert tokens("abc12", before="Policy.\n") != tokens("zzzzz", before="Policy.\n")  # anywhere else: kept


def test_ledger_counts_anthropic_requests(gateway: tuple[RunningGateway, str], mistral_server: VllmServer) -> None:
    running, _key = gateway
    sdk(gateway).messages.create(
        model=mistral_server.model_name, max_tokens=3, messages=[{"role": "user", "content": "hi"}]
    )
    running.stop()  # SIGTERM flushes the ledger
    try:
        rows = _ledger_rows(running.fleet_file.parent / "state" / "gateway.sqlite3", mistral_server.model_name)
        assert rows and rows[-1][1] == 3 and rows[-1][2] == 200  # completion tokens, status
        assert all(row[0] == "agent" for row in rows)
    finally:
        running.start()


def _ledger_rows(database: Path, model: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(database) as connection:
        return connection.execute(
            "SELECT key_name, completion_tokens, status FROM usage WHERE model = ? ORDER BY rowid", (model,)
        ).fetchall()


def test_thinking_never_reaches_a_mistral_engine_as_a_template_switch(
    gateway: tuple[RunningGateway, str], mistral_server: VllmServer
) -> None:
    """The mistral tokenizer refuses chat-template kwargs; an agent that asks for thinking must still get answers."""
    direct = httpx.post(f"{mistral_server.openai_base_url}/chat/completions", timeout=60, json={
        "model": mistral_server.model_name, "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}],
        "chat_template_kwargs": {"enable_thinking": True},
    })  # fmt: skip
    assert direct.status_code == 400, direct.text  # what the gateway would cause if it sent the switch
    for thinking in ({"type": "enabled", "budget_tokens": 1024}, {"type": "disabled"}):
        answer = sdk(gateway).messages.create(
            model=mistral_server.model_name, max_tokens=3, messages=[{"role": "user", "content": "hi"}],
            thinking=thinking,  # type: ignore[arg-type]
        )  # fmt: skip
        assert answer.stop_reason == "max_tokens" and answer.usage.output_tokens == 3


@pytest.mark.parametrize("streaming", [False, True], ids=["sync", "stream"])
def test_a_repeated_prompt_reports_cache_reads_from_the_engine(
    gateway: tuple[RunningGateway, str], mistral_server: VllmServer, streaming: bool
) -> None:
    """The mistral session server runs with --enable-prompt-tokens-details: its cached tokens become
    `cache_read_input_tokens`, and `input_tokens` keeps only the part the engine computed."""
    client = sdk(gateway)
    text = f"Session {secrets.token_hex(8)}. " + " ".join(f"Rule {n}: be brief and exact." for n in range(60))
    request: dict[str, Any] = {"model": mistral_server.model_name, "max_tokens": 2, "system": text,
                               "messages": [{"role": "user", "content": "ok?"}]}  # fmt: skip

    def usage() -> anthropic.types.Usage:
        if not streaming:
            return client.messages.create(**request).usage
        with client.messages.stream(**request) as stream:
            return stream.get_final_message().usage

    first, second = usage(), usage()
    total = first.input_tokens + (first.cache_read_input_tokens or 0)
    assert total > 256
    assert (second.cache_read_input_tokens or 0) >= 128  # at least one whole 128-token CPU block
    assert second.input_tokens + second.cache_read_input_tokens == total
