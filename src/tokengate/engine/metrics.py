"""Engine-side truth from vLLM's /metrics: KV usage, queue, prefix-cache counters."""

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

    @property
    def prefix_cache_hit_rate(self) -> float | None:
        if not self.prefix_cache_queries:
            return None
        return (self.prefix_cache_hits or 0) / self.prefix_cache_queries


_FIELDS = {
    "vllm:kv_cache_usage_perc": "kv_cache_usage",
    "vllm:gpu_cache_usage_perc": "kv_cache_usage",
    "vllm:num_requests_running": "requests_running",
    "vllm:num_requests_waiting": "requests_waiting",
    "vllm:prefix_cache_queries": "prefix_cache_queries",
    "vllm:prefix_cache_hits": "prefix_cache_hits",
}


def parse_metrics(text: str) -> EngineMetrics:
    """Sum each metric over its label sets (one per served model / engine)."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:  # by sample name: how the parser groups families varies with HELP/TYPE lines
            field = _FIELDS.get(sample.name.removesuffix("_total"))
            if field is not None:
                values[field] = values.get(field, 0.0) + sample.value
    return EngineMetrics(**values)


def scrape_metrics(base_url: str, *, timeout: float = 3.0) -> EngineMetrics | None:
    try:
        response = httpx.get(f"{base_url}/metrics", timeout=timeout)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    return parse_metrics(response.text)
