"""`bench multiturn`: N concurrent agent sessions of T turns over one shared system prompt and tool set.

Each turn sends the whole conversation so far: after a reply, the next message is a user message or, every
other turn when tools are on, a tool call by the assistant and its result (the agent acted). Message sizes
and think times are drawn around their mean (uniform, normal, lognormal or exponential; `Distribution`).
Reports TTFT by turn index, cached tokens by turn, each session's cached ratio, sessions completed and goodput
under the SLOs.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import Field

from tokengate.bench.aggregate import Slo, latency_values
from tokengate.bench.prompts import new_salt
from tokengate.bench.records import RequestRecord
from tokengate.bench.run import BenchRun
from tokengate.bench.runner import RunContext, execute
from tokengate.bench.stats import summarize
from tokengate.bench.target import BenchTarget
from tokengate.bench.workload import CHAT_PATH, WorkloadConfig, chat_body, room_for_prompt
from tokengate.errors import InvalidInputError

WORKLOAD = "multiturn"
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": {argument: {"type": "string"}}, "required": [argument]},
    }}
    for name, description, argument in (
        ("read_file", "Read a file of the repository.", "path"),
        ("run_tests", "Run the test suite and return its output.", "selection"),
        ("search_code", "Search the repository for a pattern.", "pattern"),
    )
]  # fmt: skip


class Distribution(StrEnum):
    """How message sizes and think times scatter around their mean; `spread` is the half-width for uniform and
    the standard deviation for normal and lognormal. Exponential (a Poisson arrival's gaps) takes the mean only."""

    UNIFORM = "uniform"
    NORMAL = "normal"
    LOGNORMAL = "lognormal"
    EXPONENTIAL = "exponential"


class MultiturnConfig(WorkloadConfig):
    sessions: int = Field(4, ge=1, description="concurrent sessions")
    turns: int = Field(4, ge=1, description="requests per session")
    system_prompt_tokens: int = Field(512, ge=0, description="shared by every session")
    user_tokens: int = Field(128, ge=1, description="mean size of a new user message")
    user_tokens_spread: int = Field(32, ge=0, description="how far user message sizes scatter (see sizes)")
    tool_result_tokens: int = Field(256, ge=1, description="mean size of a tool result")
    tool_result_tokens_spread: int = Field(64, ge=0)
    sizes: Distribution = Field(Distribution.UNIFORM, description="distribution of message sizes")
    max_tokens: int = Field(32, ge=1, description="tokens generated per turn")
    think_time_s: float = Field(0.0, ge=0, description="mean pause between a reply and the next turn")
    think_time_spread_s: float = Field(0.0, ge=0, description="how far pauses scatter (see think_times)")
    think_times: Distribution = Field(Distribution.UNIFORM, description="distribution of think times")
    tools: bool = True
    slo_ttft_ms: float | None = Field(None, gt=0)
    slo_tpot_ms: float | None = Field(None, gt=0)


def draw(rng: random.Random, mean: float, spread: float, distribution: Distribution = Distribution.UNIFORM) -> float:
    """One draw, never negative."""
    if mean <= 0:
        return 0.0
    if distribution is Distribution.EXPONENTIAL:
        return rng.expovariate(1 / mean)
    if not spread:
        return mean
    if distribution is Distribution.NORMAL:
        return max(0.0, rng.gauss(mean, spread))
    if distribution is Distribution.LOGNORMAL:  # the mean and standard deviation of the draws, not of their log
        sigma_squared = math.log(1 + (spread / mean) ** 2)
        return rng.lognormvariate(math.log(mean) - sigma_squared / 2, math.sqrt(sigma_squared))
    return max(0.0, rng.uniform(mean - spread, mean + spread))


def tool_call_id(session: int, turn: int) -> str:
    """Nine alphanumerics: what Mistral's tokenizer mode produces and accepts."""
    return f"s{session:03d}t{turn:04d}"[:9].ljust(9, "0")


@dataclass
class _Session:
    index: int
    rng: random.Random
    messages: list[dict[str, Any]] = field(default_factory=list)
    completed_turns: int = 0


@dataclass
class _Multiturn:
    config: MultiturnConfig
    salt: str
    name: str = WORKLOAD
    system_prompt: str = ""

    @property
    def metrics_interval_s(self) -> float:
        return self.config.metrics_interval_s

    @property
    def slo(self) -> Slo:
        return Slo(ttft_ms=self.config.slo_ttft_ms, tpot_ms=self.config.slo_tpot_ms)

    def total_requests(self) -> int:
        return self.config.sessions * self.config.turns

    async def prepare(self, ctx: RunContext) -> None:
        config = self.config
        ctx.effective["salt"] = self.salt
        # One request at a time per engine: the counters can say what each request found in the cache.
        ctx.attribute_cached_tokens = config.sessions == 1
        room = room_for_prompt(ctx.info, config.max_tokens)
        longest = config.system_prompt_tokens + config.turns * (
            max(
                config.user_tokens + config.user_tokens_spread,
                config.tool_result_tokens + config.tool_result_tokens_spread,
            )
            + config.max_tokens
            + 40
        )
        if room is not None and longest > room:
            raise InvalidInputError(
                f"a session can grow to about {longest} tokens but the engine's max_model_len allows {room} with "
                f"max_tokens {config.max_tokens}: lower --turns, --user-tokens or --system-prompt-tokens"
            )
        if config.system_prompt_tokens:
            self.system_prompt = ctx.prompts.text(config.system_prompt_tokens, "system")

    async def measure(self, ctx: RunContext) -> None:
        sessions = [self._new_session(i) for i in range(self.config.sessions)]
        await asyncio.gather(*(self._run_session(ctx, session) for session in sessions))

    def _new_session(self, index: int) -> _Session:
        session = _Session(index=index, rng=random.Random(f"{self.config.seed}:{self.salt}:session{index}"))
        if self.system_prompt:
            session.messages.append({"role": "system", "content": self.system_prompt})
        return session

    async def _run_session(self, ctx: RunContext, session: _Session) -> None:
        config = self.config
        for turn in range(config.turns):
            if turn:
                await asyncio.sleep(
                    draw(session.rng, config.think_time_s, config.think_time_spread_s, config.think_times)
                )
            kind = "tool" if config.tools and turn % 2 == 1 else "user"
            session.messages.extend(self._next_messages(ctx, session, turn, kind))
            body = chat_body(session.messages, config.max_tokens, config.extra_body)
            if config.tools:
                body = {**body, "tools": TOOLS, "tool_choice": "none"}  # rendered in the prompt; never parsed
            streamed = await ctx.send(CHAT_PATH, body, session=session.index, turn=turn, phase=kind)
            if not streamed.record.ok:
                return  # the conversation cannot go on without the reply
            session.completed_turns += 1
            session.messages.append({"role": "assistant", "content": streamed.reply or "ok"})

    def _next_messages(self, ctx: RunContext, session: _Session, turn: int, kind: str) -> list[dict[str, Any]]:
        config, rng = self.config, session.rng
        key = f"s{session.index}.t{turn}"
        if kind == "user":
            size = round(draw(rng, config.user_tokens, config.user_tokens_spread, config.sizes))
            return [{"role": "user", "content": ctx.prompts.text(max(1, size), key)}]
        # The agent acted: its reply becomes a tool call, followed by the tool's result.
        reply = session.messages.pop()
        call_id = tool_call_id(session.index, turn)
        tool = TOOLS[turn % len(TOOLS)]["function"]
        argument = next(iter(tool["parameters"]["properties"]))
        call = {"id": call_id, "type": "function", "function": {
            "name": tool["name"], "arguments": json.dumps({argument: (reply.get("content") or "x")[:40]}),
        }}  # fmt: skip
        size = round(draw(rng, config.tool_result_tokens, config.tool_result_tokens_spread, config.sizes))
        return [
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call_id, "content": ctx.prompts.text(max(1, size), key)},
        ]

    def finish(self, run: BenchRun) -> BenchRun:
        return add_multiturn_summaries(run, self.config.turns)


def add_multiturn_summaries(run: BenchRun, turns: int) -> BenchRun:
    """Per-turn TTFT, prompt and cached tokens; per-session cached ratio; sessions completed."""
    by_turn: dict[int, list[RequestRecord]] = {t: [] for t in range(turns)}
    for record in run.requests:
        if record.turn is not None:
            by_turn.setdefault(record.turn, []).append(record)
    for turn, records in sorted(by_turn.items()):
        ok = [r for r in records if r.ok]
        run.summaries[f"ttft_ms[turn={turn}]"] = summarize(latency_values(records, "ttft_ms"))
        run.summaries[f"prompt_tokens[turn={turn}]"] = summarize([r.prompt_tokens for r in ok])
        cached = [r.cached_tokens for r in ok if r.cached_tokens is not None]
        if cached:
            run.summaries[f"cached_tokens[turn={turn}]"] = summarize(cached)
    ratios = _session_cached_ratios(run.requests)
    if ratios:
        run.summaries["session_cached_ratio"] = summarize(ratios)
    sessions = {r.session for r in run.requests if r.session is not None}
    completed = sum(1 for s in sessions if sum(1 for r in run.requests if r.session == s and r.ok) >= turns)
    run.scalars["sessions"] = float(run.config.get("sessions", len(sessions)))
    run.scalars["sessions_completed"] = float(completed)
    return run


def _session_cached_ratios(records: list[RequestRecord]) -> list[float]:
    ratios = []
    for session in sorted({r.session for r in records if r.session is not None}):
        rows = [r for r in records if r.session == session and r.ok and r.cached_tokens is not None]
        prompt = sum(r.prompt_tokens for r in rows)
        if prompt:
            ratios.append(sum(r.cached_tokens or 0 for r in rows) / prompt)
    return ratios


def run_multiturn(
    target: BenchTarget,
    config: MultiturnConfig,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
) -> BenchRun:
    """Run `config.sessions` concurrent sessions of `config.turns` turns against `target`."""
    return execute(_Multiturn(config, config.salt or new_salt()), target, on_progress=on_progress, stop=stop)
