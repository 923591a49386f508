"""The workloads and the CLI driven end to end against a stub OpenAI-compatible server (aiohttp, in a thread):
it isolates our own code (request shapes, timing, labels, stop and Ctrl-C, counters arithmetic); what vLLM
does is measured in tests/live/test_bench_live.py."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from typer.testing import CliRunner

from tokengate.bench.client import ENGINE_KEEPALIVE_SECONDS, BenchClient
from tokengate.bench.multiturn import MultiturnConfig, run_multiturn
from tokengate.bench.prefix_cache import PrefixCacheConfig, run_prefix_cache
from tokengate.bench.registry import WORKLOADS, run_workload, workload_config
from tokengate.bench.run import BenchRun
from tokengate.bench.sweep import SweepConfig, run_sweep
from tokengate.bench.target import BenchTarget
from tokengate.cli.main import app
from tokengate.errors import EngineRequestError, InvalidInputError
from tokengate.testing.vllm_server import free_port

MAX_MODEL_LEN = 4096


def count_tokens(body: dict[str, Any]) -> int:
    if "messages" in body:
        text = " ".join(str(m.get("content") or "") for m in body["messages"])
        return round(len(text.split()) * 1.5) + 5 * len(body["messages"])
    return round(len(str(body.get("prompt", "")).split()) * 1.5)


@dataclass
class Stub:
    """Streams `max_tokens` tokens, 1 ms apart; counts prompt tokens as 1.5 per word; keeps every body."""

    url: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    seen_prompts: set[str] = field(default_factory=set)
    in_flight: int = 0
    peak_in_flight: int = 0
    queries: int = 0
    hits: int = 0
    client_ports: list[int] = field(default_factory=list)  # one per request: a reused connection repeats its port

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "stub", "max_model_len": MAX_MODEL_LEN, "root": "/m"}]})

    async def tokenize(self, request: web.Request) -> web.Response:
        return web.json_response({"count": count_tokens(await request.json())})

    async def metrics(self, request: web.Request) -> web.Response:
        lines = [
            f'vllm:prefix_cache_queries_total{{model_name="stub"}} {self.queries}.0',
            f'vllm:prefix_cache_hits_total{{model_name="stub"}} {self.hits}.0',
            f'vllm:num_requests_running{{model_name="stub"}} {self.in_flight}.0',
            'vllm:cache_config_info{block_size="16",enable_prefix_caching="True"} 1.0',
        ]
        return web.Response(text="\n".join(lines) + "\n")

    async def complete(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        self.client_ports.append(request.transport.get_extra_info("peername")[1] if request.transport else 0)
        if "FAIL" in json.dumps(body):
            return web.json_response({"error": {"message": "refused"}}, status=500)
        prompt = json.dumps(body.get("messages") or body.get("prompt"))
        tokens = count_tokens(body)
        self.queries += tokens
        self.hits += tokens // 16 * 16 if prompt in self.seen_prompts else 0
        self.seen_prompts.add(prompt)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            await asyncio.sleep(0.003)
            for i in range(body["max_tokens"]):
                delta = {"content": f"t{i} "} if "messages" in body else None
                choice = {"index": 0, "delta": delta} if delta else {"index": 0, "text": f"t{i} "}
                await response.write(f"data: {json.dumps({'choices': [choice]})}\n\n".encode())
                await asyncio.sleep(0.001)
            usage = {"prompt_tokens": tokens, "completion_tokens": body["max_tokens"]}
            await response.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n".encode())
        finally:
            self.in_flight -= 1
        return response


@pytest.fixture(scope="module")
def stub() -> Iterator[Stub]:
    state = Stub()
    application = web.Application()
    application.router.add_get("/v1/models", state.models)
    application.router.add_post("/tokenize", state.tokenize)
    application.router.add_get("/metrics", state.metrics)
    application.router.add_post("/v1/chat/completions", state.complete)
    application.router.add_post("/v1/completions", state.complete)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(application)
    port = free_port()
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture
def target(stub: Stub) -> BenchTarget:
    stub.bodies.clear()
    stub.peak_in_flight = 0
    return BenchTarget(base_url=stub.url, model="stub")


def test_sweep_levels_hold_their_concurrency_and_fixed_lengths(stub: Stub, target: BenchTarget) -> None:
    config = SweepConfig(concurrency=[1, 3], requests_per_level=6, prompt_tokens=300, max_tokens=5,
                         endpoint="completions", metrics_interval_s=0.01)  # fmt: skip
    run = run_sweep(target, config)
    assert not run.interrupted
    assert len(run.requests) == 12
    assert [level.concurrency for level in run.levels] == [1, 3]
    assert stub.peak_in_flight == 3
    assert all(b["ignore_eos"] is True and b["max_tokens"] == 5 and "prompt" in b for b in stub.bodies)
    assert len(stub.bodies) == 13  # one warm-up, not recorded
    assert len({b["prompt"] for b in stub.bodies}) == 13  # every prompt unique
    for row in run.requests:
        assert row.ok and row.completion_tokens == 5
        assert abs(row.prompt_tokens - 300) <= 2
        assert row.ttft_ms is not None and row.ttft_ms < row.e2e_ms
        assert len(row.itl_ms) == 4
    for level in run.levels:
        assert level.summaries["ttft_ms"].n == 6
        assert level.scalars["completed_requests"] == 6
        sent = sum(r.prompt_tokens for r in run.requests if r.level == level.index)
        assert level.server is not None and level.server.prefix_cache_queries == sent
    assert run.scalars["output_tokens_per_second"] > 0
    assert run.server is not None and run.server.block_size == 16


def test_sweep_by_poisson_rate(target: BenchTarget) -> None:
    run = run_sweep(target, SweepConfig(rates=[50.0], requests_per_level=5, max_tokens=2, warmup_requests=0))
    assert len(run.requests) == 5
    assert run.levels[0].rate == 50.0 and run.levels[0].label == "50 req/s"


def test_prefix_cache_protocol_shapes(stub: Stub, target: BenchTarget) -> None:
    config = PrefixCacheConfig(prompt_tokens=[200, 9000], prefixes=2, repeats=3, metrics_interval_s=0)
    run = run_prefix_cache(target, config)
    assert run.config["prompt_tokens"] == [200, MAX_MODEL_LEN - 1]  # capped by max_model_len
    assert run.config["capped_by_max_model_len"] == MAX_MODEL_LEN
    assert [r.phase for r in run.requests[:4]] == ["miss", "hit", "hit", "hit"]
    assert len(run.requests) == 2 * 2 * 4
    measured = stub.bodies[-16:]
    assert measured[0] == measured[1] == measured[3] != measured[4]  # a miss, then its exact repeats
    warmups = stub.bodies[:-16]
    assert len(warmups) == 2 and all(w not in measured for w in warmups)
    for row in run.requests:
        assert row.cached_tokens_source == "server_counters"
        assert (row.cached_tokens == 0) == (row.phase == "miss")
    assert run.scalars["achieved_hit_rate"] == pytest.approx(run.scalars["theoretical_hit_rate"], abs=0.01)
    assert {"ttft_miss_ms[tokens=200]", "ttft_hit_ms[tokens=4095]"} <= set(run.summaries)


def test_multiturn_conversations_grow_by_appending(stub: Stub, target: BenchTarget) -> None:
    config = MultiturnConfig(sessions=2, turns=4, system_prompt_tokens=64, user_tokens=20, tool_result_tokens=30,
                             max_tokens=3, metrics_interval_s=0)  # fmt: skip
    run = run_multiturn(target, config)
    assert len(run.requests) == 8 and run.scalars["sessions_completed"] == 2
    by_session: dict[str, list[list[dict[str, Any]]]] = {}
    for body in stub.bodies:
        assert body["tools"] and body["tool_choice"] == "none"
        by_session.setdefault(body["messages"][1]["content"][:20], []).append(body["messages"])
    assert len(by_session) == 2
    systems = {conversation[0][0]["content"] for conversation in by_session.values()}
    assert len(systems) == 1  # one system prompt shared by every session
    for conversation in by_session.values():
        for before, after in itertools.pairwise(conversation):
            assert after[: len(before)] == before  # each turn extends the last: its prefix can be cached
        roles = [m["role"] for m in conversation[-1]]
        assert roles == ["system", "user", "assistant", "tool", "assistant", "user", "assistant", "tool"]
        call = conversation[-1][2]["tool_calls"][0]
        assert conversation[-1][3]["tool_call_id"] == call["id"] and len(call["id"]) == 9
    assert [r.turn for r in run.requests if r.session == 0] == [0, 1, 2, 3]


def test_stop_event_ends_the_run_with_what_was_measured(target: BenchTarget) -> None:
    stop = threading.Event()

    def progress(done: int, total: int) -> None:
        if done >= 3:
            stop.set()

    run = run_sweep(target, SweepConfig(concurrency=[1], requests_per_level=50, max_tokens=20), on_progress=progress,
                    stop=stop)  # fmt: skip
    assert run.interrupted
    assert 3 <= len(run.requests) < 50
    assert run.levels[0].summaries["ttft_ms"].n == len(run.requests)
    assert run.levels[0].server is not None  # the level cut short still has its counters


def test_ctrl_c_ends_the_run_with_what_was_measured(target: BenchTarget) -> None:
    sent = []

    def progress(done: int, total: int) -> None:
        if done == 2 and not sent:
            sent.append(done)
            os.kill(os.getpid(), signal.SIGINT)

    run = run_multiturn(target, MultiturnConfig(sessions=1, turns=30, max_tokens=2, system_prompt_tokens=16,
                                                user_tokens=8, tool_result_tokens=8), on_progress=progress)  # fmt: skip
    assert run.interrupted
    assert 2 <= len(run.requests) < 30


def test_failures_are_rows_and_unreachable_servers_are_errors(target: BenchTarget) -> None:
    run = run_sweep(target, SweepConfig(concurrency=[2], requests_per_level=2, warmup_requests=0,
                                        extra_body={"user": "FAIL"}))  # fmt: skip
    assert [r.status for r in run.requests] == [500, 500]
    assert run.scalars["failed_requests"] == 2 and run.summaries["ttft_ms"].n == 0
    assert "refused" in (run.requests[0].error or "")
    with pytest.raises(EngineRequestError, match="does not serve 'other'"):
        run_sweep(target.model_copy(update={"model": "other"}), SweepConfig())
    with pytest.raises(EngineRequestError, match="did not answer"):
        run_sweep(BenchTarget(base_url=f"http://127.0.0.1:{free_port()}", model="m"), SweepConfig())


runner = CliRunner()


def test_cli_sweep_report_compare(stub: Stub, tmp_path: Path) -> None:
    out = tmp_path / "a.json"
    args = ["bench", "sweep", stub.url, "-m", "stub", "--concurrency", "1,2", "--requests", "4", "--max-tokens", "3"]
    result = runner.invoke(app, [*args, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["out"] == str(out)
    assert [level["concurrency"] for level in document["run"]["levels"]] == [1, 2]
    assert BenchRun.load(out).workload == "sweep"
    table = runner.invoke(app, [*args, "--out", str(tmp_path / "b.json")])
    assert table.exit_code == 0, table.output
    assert "concurrency" in table.output and "saved" in table.output
    report = runner.invoke(app, ["bench", "report", str(out), str(tmp_path / "b.json"), "--html",
                                 str(tmp_path / "r.html"), "--json"])  # fmt: skip
    assert report.exit_code == 0, report.output
    assert Path(json.loads(report.stdout)["html"]).is_file()
    compare = runner.invoke(app, ["bench", "compare", str(out), str(tmp_path / "b.json"), "--json"])
    assert compare.exit_code == 0, compare.output
    metrics = {c["metric"] for c in json.loads(compare.stdout)["comparisons"]}
    assert {"ttft_ms", "ttft_ms[concurrency=2]"} <= metrics
    assert "verdict" in runner.invoke(app, ["bench", "compare", str(out), str(tmp_path / "b.json")]).output


def test_cli_multiturn_and_prefix_cache_tables(stub: Stub, tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "prefix-cache", stub.url, "-m", "stub", "--prompt-tokens", "100",
                                 "--prefixes", "3", "--repeats", "2", "--out", str(tmp_path / "p.json")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "TTFT miss" in result.output and "theoretical" in " ".join(result.output.split())
    result = runner.invoke(app, ["bench", "multiturn", stub.url, "-m", "stub", "--sessions", "1", "--turns", "3",
                                 "--system-prompt-tokens", "32", "--out", str(tmp_path / "m.json")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "sessions completed 1/1" in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sweep", "http://x:1", "-m", "m", "--concurrency", "1,a"], "--concurrency takes comma-separated numbers"),
        (["sweep", "http://x:1", "-m", "m", "--concurrency", "0"], "--concurrency"),
        (["sweep", "http://x:1", "-m", "m", "--concurrency", "1", "--rate", "2"], "not both"),
        (["sweep", "http://x:1", "-m", "m", "--endpoint", "responses"], "--endpoint"),
        (["sweep", "http://x:1"], "--model"),
        (["prefix-cache", "x:1", "-m", "m"], "http://"),
        (["prefix-cache", "http://x:1", "-m", "m", "--prefixes", "0"], "--prefixes"),
        (["multiturn", "http://x:1", "-m", "m", "--turns", "0"], "--turns"),
        (["compare", "missing-a.json", "missing-b.json"], "no such results file"),
        (["sweep", "http://x:1", "-m", "m", "--extra-body", "{temperature: 0}"], "--extra-body is not JSON"),
        (["sweep", "http://x:1", "-m", "m", "--extra-body", "[1]"], "--extra-body must be a JSON object"),
    ],
)
def test_cli_bad_input_exits_2_naming_the_field(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["bench", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_cli_sweep_too_long_for_the_engine(stub: Stub) -> None:
    result = runner.invoke(app, ["bench", "sweep", stub.url, "-m", "stub", "--prompt-tokens", "5000"])
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "max_model_len 4096" in output and "--prompt-tokens" in output


def test_cli_extra_body_reaches_every_request(stub: Stub, tmp_path: Path) -> None:
    stub.bodies.clear()
    extra = '{"chat_template_kwargs": {"enable_thinking": false}, "temperature": 0}'
    args = ["bench", "sweep", stub.url, "-m", "stub", "--requests", "3", "--max-tokens", "2", "--extra-body", extra]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "x.json")])
    assert result.exit_code == 0, result.output
    assert len(stub.bodies) == 4
    assert all(b["chat_template_kwargs"] == {"enable_thinking": False} and b["temperature"] == 0 for b in stub.bodies)


def test_workloads_by_name(target: BenchTarget) -> None:
    config = workload_config("sweep", {"concurrency": [2], "requests_per_level": 2, "max_tokens": 2})
    assert isinstance(config, SweepConfig)
    run = run_workload("sweep", target, {"concurrency": [2], "requests_per_level": 2, "max_tokens": 2})
    assert run.workload == "sweep" and len(run.requests) == 2
    assert set(WORKLOADS) == {"prefix-cache", "multiturn", "sweep"}
    with pytest.raises(InvalidInputError, match="unknown workload 'load'; known: multiturn, prefix-cache, sweep"):
        workload_config("load", {})
    with pytest.raises(InvalidInputError, match="workload sweep: concurency"):
        workload_config("sweep", {"concurency": [2]})


def test_the_client_drops_idle_connections_before_the_engine_closes_them(stub: Stub, target: BenchTarget) -> None:
    """vLLM closes a connection after 5 s idle; reusing one about that old fails a request with "Server
    disconnected" (it did, in a CI run of `tokengate tune` on a slow baseline). An idle connection is reused
    only while younger than the client's keep-alive, which stays below the engine's."""
    assert ENGINE_KEEPALIVE_SECONDS < 5  # VLLM_HTTP_TIMEOUT_KEEP_ALIVE's default
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}

    async def three_requests() -> None:
        async with BenchClient(target, keepalive_seconds=0.3) as client:
            for pause in (0.0, 0.6, 0.0):
                await asyncio.sleep(pause)
                assert (await client.stream("/v1/chat/completions", body)).record.ok

    stub.client_ports.clear()
    asyncio.run(three_requests())
    first, after_a_pause, right_after = stub.client_ports
    assert after_a_pause != first  # idle longer than the keep-alive: a new connection
    assert right_after == after_a_pause  # idle a moment: the same connection
