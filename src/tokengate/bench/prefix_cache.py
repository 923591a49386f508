"""`bench prefix-cache`: the cache-state protocol. For each prompt length and K distinct prefixes, one miss
(a salted prompt nobody sent before) then R identical repeats (hits), one request at a time.

Reports TTFT miss vs hit (medians, bootstrap 95% CIs), the speedup with its CI, and the achieved hit rate
from the engine's counters against the theoretical one: the repeats' prompt tokens that fall in whole KV
blocks (vLLM recomputes at least the last token, so a repeat of n tokens can hit floor((n-1)/B)*B), over
all prompt tokens sent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, Field, field_validator

from tokengate.bench.prompts import fit_text, new_salt
from tokengate.bench.records import RequestRecord
from tokengate.bench.run import BenchRun
from tokengate.bench.runner import RunContext, execute
from tokengate.bench.server_metrics import ServerDeltas
from tokengate.bench.stats import Comparison, compare_samples, summarize
from tokengate.bench.target import BenchTarget
from tokengate.bench.workload import CHAT_PATH, WorkloadConfig, chat_body, room_for_prompt

WORKLOAD = "prefix-cache"


class PrefixCacheConfig(WorkloadConfig):
    prompt_tokens: list[int] = Field(default_factory=lambda: [1024, 4096, 16384], min_length=1)
    prefixes: int = Field(4, ge=1, description="distinct prefixes (misses) per length")
    repeats: int = Field(3, ge=1, description="repeats (hits) per prefix")
    max_tokens: int = Field(1, ge=1)
    warmup: bool = True
    min_relative_difference: float = Field(
        0.05, ge=0, description="a hit/miss difference below this fraction of the miss median is 'indistinguishable'"
    )

    @field_validator("prompt_tokens")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(n < 16 for n in value):
            raise ValueError("every prompt length must be at least 16 tokens")
        return sorted(set(value))


class PrefixCacheLength(BaseModel):
    prompt_tokens: int  # as asked (after the max_model_len cap)
    measured_prompt_tokens: float | None  # median of what the engine counted
    comparison: Comparison  # A = miss, B = hit
    speedup: float | None  # median miss / median hit
    speedup_ci_low: float | None
    speedup_ci_high: float | None


class PrefixCacheAnalysis(BaseModel):
    lengths: list[PrefixCacheLength]
    block_size: int | None
    prefix_caching_enabled: bool | None
    prompt_tokens_sent: int
    theoretical_hit_tokens: int | None
    theoretical_hit_rate: float | None
    server_queries: float | None
    server_hits: float | None
    achieved_hit_rate: float | None
    notes: list[str] = []


def cacheable_tokens(prompt_tokens: int, block_size: int) -> int:
    """Prompt tokens vLLM can serve from cache on an exact repeat: whole blocks, the last token recomputed."""
    return max(0, (prompt_tokens - 1) // block_size * block_size)


def _length_row(
    length: int, misses: list[RequestRecord], hits: list[RequestRecord], config: PrefixCacheConfig
) -> PrefixCacheLength:
    miss_ttft = [r.ttft_ms for r in misses if r.ok and r.ttft_ms is not None]
    hit_ttft = [r.ttft_ms for r in hits if r.ok and r.ttft_ms is not None]
    comparison = compare_samples(
        f"ttft_ms[tokens={length}]", miss_ttft, hit_ttft, seed=config.seed,
        min_relative_difference=config.min_relative_difference,
    )  # fmt: skip
    low = high = None
    if comparison.ratio_ci_low and comparison.ratio_ci_high:
        low, high = 1 / comparison.ratio_ci_high, 1 / comparison.ratio_ci_low
    counted = [r.prompt_tokens for r in (*misses, *hits) if r.ok and r.prompt_tokens]
    return PrefixCacheLength(
        prompt_tokens=length,
        measured_prompt_tokens=summarize(counted).median,
        comparison=comparison,
        speedup=1 / comparison.ratio if comparison.ratio else None,
        speedup_ci_low=low,
        speedup_ci_high=high,
    )


def analyze_prefix_cache(run: BenchRun) -> PrefixCacheAnalysis:
    """Hit vs miss per length and the engine's hit rate against the protocol's, from a saved run."""
    config = PrefixCacheConfig.model_validate(
        {k: v for k, v in run.config.items() if k in PrefixCacheConfig.model_fields}
    )
    measured = [r for r in run.requests if r.phase in ("miss", "hit")]
    lengths = sorted({r.target_prompt_tokens for r in measured if r.target_prompt_tokens is not None})
    rows = [
        _length_row(
            length,
            [r for r in measured if r.target_prompt_tokens == length and r.phase == "miss"],
            [r for r in measured if r.target_prompt_tokens == length and r.phase == "hit"],
            config,
        )
        for length in lengths
    ]
    server = run.server
    block_size = server.block_size if server else None
    sent = sum(r.prompt_tokens for r in measured if r.ok)
    theoretical = None
    if block_size:
        theoretical = sum(cacheable_tokens(r.prompt_tokens, block_size) for r in measured if r.ok and r.phase == "hit")
    notes = _notes(run, server.prefix_caching_enabled if server else None, block_size)
    return PrefixCacheAnalysis(
        lengths=rows,
        block_size=block_size,
        prefix_caching_enabled=server.prefix_caching_enabled if server else None,
        prompt_tokens_sent=sent,
        theoretical_hit_tokens=theoretical,
        theoretical_hit_rate=theoretical / sent if theoretical is not None and sent else None,
        server_queries=server.prefix_cache_queries if server else None,
        server_hits=server.prefix_cache_hits if server else None,
        achieved_hit_rate=_achieved(server, sent),
        notes=notes,
    )


def _achieved(server: ServerDeltas | None, sent: int) -> float | None:
    """Hits over queries; with caching off vLLM counts no queries either, and nothing hit: 0 of what was sent."""
    if server is None or server.prefix_cache_hits is None:
        return None
    if server.hit_rate is not None:
        return server.hit_rate
    return server.prefix_cache_hits / sent if sent else None


def _notes(run: BenchRun, enabled: bool | None, block_size: int | None) -> list[str]:
    notes = []
    if run.server is None:
        notes.append("no engine /metrics: no server counters (pass --metrics-url ENGINE when the URL is a gateway)")
    elif block_size is None:
        notes.append("the engine does not export vllm:cache_config_info: block size unknown, no theoretical hit rate")
    if enabled is False:
        notes.append("prefix caching is off on this engine (--no-enable-prefix-caching): no hits are expected")
    if run.interrupted:
        notes.append("interrupted: the figures cover the requests that finished")
    return notes


@dataclass
class _PrefixCache:
    config: PrefixCacheConfig
    salt: str
    name: str = WORKLOAD
    slo: None = None

    @property
    def metrics_interval_s(self) -> float:
        return self.config.metrics_interval_s

    def total_requests(self) -> int:
        return len(self.config.prompt_tokens) * self.config.prefixes * (1 + self.config.repeats)

    def __post_init__(self) -> None:
        self.lengths: list[int] = list(self.config.prompt_tokens)
        self.texts: dict[tuple[int, int], str] = {}

    async def prepare(self, ctx: RunContext) -> None:
        room = room_for_prompt(ctx.info, self.config.max_tokens)
        if room is not None and any(n > room for n in self.lengths):
            self.lengths = sorted({min(n, room) for n in self.lengths})
            ctx.effective["capped_by_max_model_len"] = ctx.info.max_model_len
        ctx.effective["prompt_tokens"] = self.lengths
        ctx.effective["salt"] = self.salt
        ctx.total = len(self.lengths) * self.config.prefixes * (1 + self.config.repeats)
        ctx.attribute_cached_tokens = True
        for length in self.lengths:
            for k in range(self.config.prefixes):
                self.texts[(length, k)] = await self._fit(ctx, length, f"{length}.{k}")
            if self.config.warmup:  # a prompt of its own: warms the kernels for this length, shares no block
                await ctx.send(CHAT_PATH, self._body(await self._fit(ctx, length, f"warmup.{length}")), record=False)

    async def _fit(self, ctx: RunContext, length: int, key: str) -> str:
        fitted = await fit_text(ctx.prompts, length, key, lambda t: ctx.count_chat(_messages(t)))
        return fitted.text

    def _body(self, text: str) -> dict[str, object]:
        return chat_body(_messages(text), self.config.max_tokens, self.config.extra_body)

    async def measure(self, ctx: RunContext) -> None:
        for length in self.lengths:
            for k in range(self.config.prefixes):
                body = self._body(self.texts[(length, k)])
                labels = {"target_prompt_tokens": length, "session": k}
                await ctx.send(CHAT_PATH, body, phase="miss", turn=0, **labels)
                for repeat in range(self.config.repeats):
                    await ctx.send(CHAT_PATH, body, phase="hit", turn=repeat + 1, **labels)

    def finish(self, run: BenchRun) -> BenchRun:
        analysis = analyze_prefix_cache(run)
        measured = [r for r in run.requests if r.ok and r.ttft_ms is not None]
        run.summaries["ttft_miss_ms"] = summarize([r.ttft_ms for r in measured if r.phase == "miss"])
        run.summaries["ttft_hit_ms"] = summarize([r.ttft_ms for r in measured if r.phase == "hit"])
        for row in analysis.lengths:
            run.summaries[f"ttft_miss_ms[tokens={row.prompt_tokens}]"] = row.comparison.a
            run.summaries[f"ttft_hit_ms[tokens={row.prompt_tokens}]"] = row.comparison.b
            for name in ("speedup", "speedup_ci_low", "speedup_ci_high"):
                value = getattr(row, name)
                if value is not None:
                    run.scalars[f"{name}[tokens={row.prompt_tokens}]"] = value
        for name in ("theoretical_hit_rate", "achieved_hit_rate"):
            value = getattr(analysis, name)
            if value is not None:
                run.scalars[name] = value
        return run


def _messages(text: str) -> list[dict[str, object]]:
    return [{"role": "user", "content": text}]


def run_prefix_cache(
    target: BenchTarget,
    config: PrefixCacheConfig,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
) -> BenchRun:
    """Run the prefix-cache protocol against `target`; see `analyze_prefix_cache` for the verdicts."""
    salt = config.salt or new_salt()
    return execute(_PrefixCache(config, salt), target, on_progress=on_progress, stop=stop)
