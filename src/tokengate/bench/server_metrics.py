"""Engine-side truth from vLLM's /metrics: KV usage, queue, prefix-cache and token counters, and their deltas.

vLLM counts prefix-cache queries and hits in tokens, at scheduling time, in whole KV blocks (128 tokens on
the CPU build, 16 on CUDA by default); `vllm:cache_config_info` carries the block size and whether prefix
caching is on, as labels.
"""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel


class EngineMetrics(BaseModel):
    kv_cache_usage: float | None = None  # 0..1
    requests_running: float | None = None
    requests_waiting: float | None = None
    prefix_cache_queries: float | None = None  # tokens looked up
    prefix_cache_hits: float | None = None  # tokens found
    preemptions: float | None = None
    prompt_tokens: float | None = None  # prefill tokens processed (counter)
    generation_tokens: float | None = None  # tokens generated (counter)
    prompt_tokens_cached: float | None = None  # cached prompt tokens of finished requests (counter)
    block_size: int | None = None
    prefix_caching_enabled: bool | None = None
    cache_config: dict[str, str] | None = None  # the labels of vllm:cache_config_info

    @property
    def prefix_cache_hit_rate(self) -> float | None:
        if not self.prefix_cache_queries:
            return None
        return (self.prefix_cache_hits or 0) / self.prefix_cache_queries

    @property
    def is_vllm(self) -> bool:
        """False when the page had none of vLLM's metrics (e.g. the gateway's own /metrics)."""
        return any(getattr(self, name) is not None for name in _FIELDS.values())


_FIELDS = {
    "vllm:kv_cache_usage_perc": "kv_cache_usage",
    "vllm:gpu_cache_usage_perc": "kv_cache_usage",
    "vllm:num_requests_running": "requests_running",
    "vllm:num_requests_waiting": "requests_waiting",
    "vllm:prefix_cache_queries": "prefix_cache_queries",
    "vllm:prefix_cache_hits": "prefix_cache_hits",
    "vllm:num_preemptions": "preemptions",
    "vllm:prompt_tokens": "prompt_tokens",
    "vllm:generation_tokens": "generation_tokens",
    "vllm:prompt_tokens_cached": "prompt_tokens_cached",
}
_CACHE_CONFIG = "vllm:cache_config_info"


def parse_metrics(text: str) -> EngineMetrics:
    """Sum each metric over its label sets (one per served model / engine); read the cache config's labels."""
    values: dict[str, float] = {}
    cache_config: dict[str, str] | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:  # by sample name: how the parser groups families varies with HELP/TYPE lines
            if sample.name == _CACHE_CONFIG:
                cache_config = dict(sample.labels)
                continue
            field = _FIELDS.get(sample.name.removesuffix("_total"))
            if field is not None:
                values[field] = values.get(field, 0.0) + sample.value
    return EngineMetrics(**values, **_cache_fields(cache_config))


def _cache_fields(labels: dict[str, str] | None) -> dict[str, object]:
    if labels is None:
        return {}
    block_size = labels.get("block_size", "")
    enabled = labels.get("enable_prefix_caching")
    return {
        "cache_config": labels,
        "block_size": int(block_size) if block_size.isdigit() else None,
        "prefix_caching_enabled": None if enabled is None else enabled == "True",
    }


def scrape_metrics(base_url: str, *, timeout: float = 3.0) -> EngineMetrics | None:
    """GET {base_url}/metrics; None when it does not answer 200."""
    try:
        response = httpx.get(f"{base_url}/metrics", timeout=timeout)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    return parse_metrics(response.text)


class ServerDeltas(BaseModel):
    """What the engine counted between two scrapes around a run, and the peaks of its gauges in between
    (polled while the run went on). Counters are None when the engine does not export them."""

    prefix_cache_queries: float | None = None
    prefix_cache_hits: float | None = None
    hit_rate: float | None = None
    preemptions: float | None = None
    kv_cache_usage_peak: float | None = None
    running_peak: float | None = None
    waiting_peak: float | None = None
    prompt_tokens: float | None = None
    generation_tokens: float | None = None
    prompt_tokens_cached: float | None = None
    block_size: int | None = None
    prefix_caching_enabled: bool | None = None
    samples: int = 0  # how many scrapes the peaks come from


def _difference(after: float | None, before: float | None) -> float | None:
    if after is None or before is None:
        return None
    return max(0.0, after - before)  # a restarted engine resets its counters


def _peak(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def server_deltas(before: EngineMetrics, after: EngineMetrics, during: list[EngineMetrics]) -> ServerDeltas:
    """Counter differences `after - before`; gauge peaks over every scrape (`before`, `during`, `after`)."""
    scrapes = [before, *during, after]
    queries = _difference(after.prefix_cache_queries, before.prefix_cache_queries)
    hits = _difference(after.prefix_cache_hits, before.prefix_cache_hits)
    return ServerDeltas(
        prefix_cache_queries=queries,
        prefix_cache_hits=hits,
        hit_rate=hits / queries if queries and hits is not None else None,
        preemptions=_difference(after.preemptions, before.preemptions),
        kv_cache_usage_peak=_peak([m.kv_cache_usage for m in scrapes]),
        running_peak=_peak([m.requests_running for m in scrapes]),
        waiting_peak=_peak([m.requests_waiting for m in scrapes]),
        prompt_tokens=_difference(after.prompt_tokens, before.prompt_tokens),
        generation_tokens=_difference(after.generation_tokens, before.generation_tokens),
        prompt_tokens_cached=_difference(after.prompt_tokens_cached, before.prompt_tokens_cached),
        block_size=after.block_size,
        prefix_caching_enabled=after.prefix_caching_enabled,
        samples=len(scrapes),
    )
