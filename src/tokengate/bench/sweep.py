"""`bench sweep`: load levels, one after another: a fixed number of concurrent clients, or Poisson arrivals
at a fixed rate. Every prompt is unique (salted) and about `prompt_tokens` long; with `ignore_eos` (vLLM)
every request generates exactly `max_tokens`, as `vllm bench serve`'s random dataset does.

Returns one `BenchRun` whose `levels` hold each level's summaries, scalars and server deltas; its own
summaries and scalars pool every level (for a one-level sweep they are that level's).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, field_validator, model_validator

from tokengate.bench.aggregate import Slo, latency_summaries, measured_window, throughput_scalars
from tokengate.bench.prompts import fit_many, new_salt
from tokengate.bench.run import BenchRun, SweepLevel
from tokengate.bench.runner import MetricsWatcher, RunContext, execute
from tokengate.bench.target import BenchTarget
from tokengate.bench.workload import CHAT_PATH, COMPLETIONS_PATH, Endpoint, WorkloadConfig, room_for_prompt
from tokengate.errors import InvalidInputError

WORKLOAD = "sweep"


class SweepConfig(WorkloadConfig):
    concurrency: list[int] | None = Field(None, description="concurrent clients per level (default [1])")
    rates: list[float] | None = Field(None, description="Poisson arrival rates, requests/s, per level")
    requests_per_level: int = Field(32, ge=1)
    prompt_tokens: int = Field(256, ge=8)
    max_tokens: int = Field(32, ge=1)
    endpoint: Endpoint = "chat"
    ignore_eos: bool = Field(True, description="vLLM's ignore_eos: every request generates max_tokens")
    warmup_requests: int = Field(1, ge=0, description="sent before the first level, not measured")
    slo_ttft_ms: float | None = Field(None, gt=0)
    slo_tpot_ms: float | None = Field(None, gt=0)

    @field_validator("concurrency")
    @classmethod
    def _clients(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or min(value) < 1):
            raise ValueError("concurrency levels must be whole numbers ≥ 1, e.g. [1, 4, 8]")
        return value

    @field_validator("rates")
    @classmethod
    def _rates(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (not value or min(value) <= 0):
            raise ValueError("rates must be positive requests per second, e.g. [0.5, 2]")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> SweepConfig:
        if self.concurrency is not None and self.rates is not None:
            raise ValueError("give concurrency levels or rates, not both")
        if self.concurrency is None and self.rates is None:
            self.concurrency = [1]
        return self

    @property
    def level_count(self) -> int:
        return len(self.concurrency or self.rates or [])


@dataclass
class _Sweep:
    config: SweepConfig
    salt: str
    name: str = WORKLOAD
    metrics_interval_s: float = 0.0  # the run-wide watcher only scrapes before and after; levels poll
    texts: list[str] = field(default_factory=list)
    levels: list[SweepLevel] = field(default_factory=list)

    @property
    def slo(self) -> Slo:
        return Slo(ttft_ms=self.config.slo_ttft_ms, tpot_ms=self.config.slo_tpot_ms)

    def total_requests(self) -> int:
        return self.config.level_count * self.config.requests_per_level

    @property
    def path(self) -> str:
        return CHAT_PATH if self.config.endpoint == "chat" else COMPLETIONS_PATH

    def _body(self, text: str) -> dict[str, Any]:
        prompt: dict[str, Any] = (
            {"messages": [{"role": "user", "content": text}]} if self.config.endpoint == "chat" else {"prompt": text}
        )
        extra = {"ignore_eos": True} if self.config.ignore_eos else {}
        return {**prompt, "max_tokens": self.config.max_tokens, **extra, **self.config.extra_body}

    async def _count(self, ctx: RunContext, text: str) -> int | None:
        if self.config.endpoint == "chat":
            return await ctx.count_chat([{"role": "user", "content": text}])
        return await ctx.count_text(text)

    async def prepare(self, ctx: RunContext) -> None:
        config = self.config
        room = room_for_prompt(ctx.info, config.max_tokens)
        if room is not None and config.prompt_tokens > room:
            raise InvalidInputError(
                f"prompt_tokens {config.prompt_tokens} + max_tokens {config.max_tokens} exceed the engine's "
                f"max_model_len {ctx.info.max_model_len}: lower --prompt-tokens to at most {room}"
            )
        ctx.effective["salt"] = self.salt

        async def count(text: str) -> int | None:
            return await self._count(ctx, text)

        width = len(str(self.total_requests()))  # equal-width keys: equal-length salted heads
        keys = [f"w{i:0{width}d}" for i in range(config.warmup_requests)]
        keys += [f"r{i:0{width}d}" for i in range(self.total_requests())]
        texts = await fit_many(ctx.prompts, config.prompt_tokens, keys, count)
        self.texts = texts[config.warmup_requests :]
        for text in texts[: config.warmup_requests]:
            await ctx.send(self.path, self._body(text), record=False)

    async def measure(self, ctx: RunContext) -> None:
        for index in range(self.config.level_count):
            await self._level(ctx, index)

    async def _level(self, ctx: RunContext, index: int) -> None:
        per_level = self.config.requests_per_level
        texts = self.texts[index * per_level : (index + 1) * per_level]
        watcher = MetricsWatcher(ctx.client, self.config.metrics_interval_s)
        await watcher.start()
        level = self._new_level(index)
        self.levels.append(level)  # before measuring: a level cut short by a stop still reports what finished
        try:
            if self.config.concurrency is not None:
                await self._closed_loop(ctx, index, texts, self.config.concurrency[index])
            else:
                await self._poisson(ctx, index, texts, (self.config.rates or [])[index])
        finally:  # a level cut short still gets its counters: the scrape is one short request
            level.ended_at = time.time()
            level.server = await watcher.finish()

    async def _closed_loop(self, ctx: RunContext, level: int, texts: list[str], clients: int) -> None:
        queue = iter(texts)

        async def client() -> None:
            for text in queue:
                await ctx.send(self.path, self._body(text), level=level)

        await asyncio.gather(*(client() for _ in range(clients)))

    async def _poisson(self, ctx: RunContext, level: int, texts: list[str], rate: float) -> None:
        rng = random.Random(f"{self.config.seed}:{self.salt}:arrivals{level}")
        tasks = []
        for text in texts:
            tasks.append(asyncio.create_task(ctx.send(self.path, self._body(text), level=level)))
            await asyncio.sleep(rng.expovariate(rate))
        await asyncio.gather(*tasks)

    def _new_level(self, index: int) -> SweepLevel:
        now = time.time()
        return SweepLevel(
            index=index,
            concurrency=self.config.concurrency[index] if self.config.concurrency else None,
            rate=self.config.rates[index] if self.config.rates else None,
            started_at=now,
            ended_at=now,
            summaries={},
            scalars={},
        )

    def finish(self, run: BenchRun) -> BenchRun:
        return add_level_summaries(run, self.levels, self.slo)


def add_level_summaries(run: BenchRun, levels: list[SweepLevel], slo: Slo) -> BenchRun:
    """Fill each level's summaries and scalars from its own requests (a level cut short keeps what finished)."""
    for level in levels:
        records = [r for r in run.requests if r.level == level.index]
        level.summaries = latency_summaries(records)
        level.scalars = throughput_scalars(records, measured_window(records), slo)
    run.levels = levels
    return run


def run_sweep(
    target: BenchTarget,
    config: SweepConfig,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
) -> BenchRun:
    """Run every level of `config` against `target`; one BenchRun, with `levels` in order."""
    return execute(_Sweep(config, config.salt or new_salt()), target, on_progress=on_progress, stop=stop)
