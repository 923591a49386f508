"""Parsing vLLM's /metrics (a real page captured from vLLM CPU 0.32.0 serving tiny qwen3 under load) and the
deltas around a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokengate.bench.server_metrics import EngineMetrics, parse_metrics, server_deltas

SAMPLE = (Path(__file__).parent / "test_bench_server_metrics.txt").read_text()


def test_parses_a_real_vllm_page() -> None:
    metrics = parse_metrics(SAMPLE)
    assert metrics.is_vllm
    assert metrics.prefix_cache_queries == 265290
    assert metrics.prefix_cache_hits == 166400
    assert metrics.prefix_cache_hit_rate == pytest.approx(166400 / 265290)
    assert metrics.prompt_tokens == 265290
    assert metrics.generation_tokens == 9074
    assert metrics.prompt_tokens_cached == 166400
    assert metrics.preemptions == 0
    assert metrics.requests_running == 16
    assert metrics.requests_waiting == 0  # not the waiting_by_reason family
    assert metrics.kv_cache_usage == pytest.approx(0.02344894968246214)
    assert metrics.block_size == 128
    assert metrics.prefix_caching_enabled is True
    assert metrics.cache_config is not None and metrics.cache_config["kv_cache_size_tokens"] == "262144"


def test_caching_off_and_a_page_that_is_not_vllm() -> None:
    off = parse_metrics(SAMPLE.replace('enable_prefix_caching="True"', 'enable_prefix_caching="False"'))
    assert off.prefix_caching_enabled is False
    gateway = parse_metrics('# TYPE tokengate_requests counter\ntokengate_requests_total{model="m"} 3.0\n')
    assert not gateway.is_vllm
    assert gateway.block_size is None


def test_deltas_take_counter_differences_and_gauge_peaks() -> None:
    before = EngineMetrics(prefix_cache_queries=1000, prefix_cache_hits=200, preemptions=1, requests_running=0,
                           kv_cache_usage=0.0, prompt_tokens=1000, generation_tokens=10, block_size=128)  # fmt: skip
    during = [EngineMetrics(requests_running=4, requests_waiting=2, kv_cache_usage=0.3),
              EngineMetrics(requests_running=8, requests_waiting=0, kv_cache_usage=0.2)]  # fmt: skip
    after = EngineMetrics(prefix_cache_queries=5000, prefix_cache_hits=2200, preemptions=3, requests_running=0,
                          kv_cache_usage=0.1, prompt_tokens=5000, generation_tokens=330, block_size=128,
                          prefix_caching_enabled=True)  # fmt: skip
    deltas = server_deltas(before, after, during)
    assert (deltas.prefix_cache_queries, deltas.prefix_cache_hits, deltas.hit_rate) == (4000, 2000, 0.5)
    assert deltas.preemptions == 2
    assert (deltas.running_peak, deltas.waiting_peak, deltas.kv_cache_usage_peak) == (8, 2, 0.3)
    assert (deltas.prompt_tokens, deltas.generation_tokens) == (4000, 320)
    assert (deltas.block_size, deltas.prefix_caching_enabled, deltas.samples) == (128, True, 4)
    assert deltas.prompt_tokens_cached is None  # neither scrape had it


def test_a_restarted_engine_does_not_give_negative_deltas() -> None:
    deltas = server_deltas(EngineMetrics(prefix_cache_queries=900), EngineMetrics(prefix_cache_queries=100), [])
    assert deltas.prefix_cache_queries == 0
    assert deltas.hit_rate is None
