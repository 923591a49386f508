"""What the workloads conclude from their rows: prefix-cache verdicts and hit rates, multiturn per-turn
figures, run comparisons. Pure: synthetic runs, no server."""

from __future__ import annotations

import random
import statistics

import numpy as np
import pytest

from tests.unit.test_bench_run import make_run, record
from tokengate.bench.compare import compare_runs, samples_by_metric, throughput_windows
from tokengate.bench.multiturn import Distribution, add_multiturn_summaries, draw, tool_call_id
from tokengate.bench.prefix_cache import analyze_prefix_cache, cacheable_tokens
from tokengate.bench.records import RequestRecord
from tokengate.bench.run import BenchRun
from tokengate.bench.server_metrics import ServerDeltas


def prefix_cache_run(miss_ms: float, hit_ms: float, *, enabled: bool = True, seed: int = 0) -> BenchRun:
    rng = np.random.default_rng(seed)
    rows: list[RequestRecord] = []
    for k in range(6):
        prompt = 2040 + k  # what the engine counted for a ~2k-token prompt
        rows.append(record(miss_ms * rng.uniform(0.9, 1.1), miss_ms * 1.1, tokens=1, phase="miss",
                           target_prompt_tokens=2048, prompt_tokens=prompt, session=k, turn=0))  # fmt: skip
        for r in range(3):
            rows.append(record(hit_ms * rng.uniform(0.9, 1.1), hit_ms * 1.1, tokens=1, phase="hit",
                               target_prompt_tokens=2048, prompt_tokens=prompt, session=k, turn=r + 1))  # fmt: skip
    queries = sum(r.prompt_tokens for r in rows)
    hits = sum(cacheable_tokens(r.prompt_tokens, 128) for r in rows if r.phase == "hit") if enabled else 0
    server = ServerDeltas(prefix_cache_queries=queries, prefix_cache_hits=hits, hit_rate=hits / queries,
                          block_size=128, prefix_caching_enabled=enabled)  # fmt: skip
    config = {"prompt_tokens": [2048], "prefixes": 6, "repeats": 3, "max_tokens": 1, "seed": 0}
    return make_run("prefix-cache", rows, server=server, config=config)


def test_cacheable_tokens_are_whole_blocks_before_the_last_token() -> None:
    assert cacheable_tokens(2048, 128) == 1920  # the last token is recomputed: its block is not served
    assert cacheable_tokens(2049, 128) == 2048
    assert cacheable_tokens(2051, 128) == 2048
    assert cacheable_tokens(100, 128) == 0
    assert cacheable_tokens(33, 16) == 32


def test_prefix_cache_hit_faster_with_ci_and_rates_agree() -> None:
    analysis = analyze_prefix_cache(prefix_cache_run(750, 50))
    [row] = analysis.lengths
    assert row.prompt_tokens == 2048
    assert row.comparison.verdict == "B faster"  # B = hits
    assert row.comparison.a.n == 6 and row.comparison.b.n == 18
    assert row.comparison.a.ci_low > row.comparison.b.ci_high  # type: ignore[operator]
    assert row.speedup == pytest.approx(15, rel=0.15)
    assert row.speedup_ci_low < row.speedup < row.speedup_ci_high  # type: ignore[operator]
    assert analysis.block_size == 128
    assert analysis.theoretical_hit_rate == pytest.approx(analysis.achieved_hit_rate)
    # 18 repeats of 2040..2045 tokens hit 1920 each; 24 requests sent.
    assert analysis.theoretical_hit_tokens == 18 * 1920
    assert analysis.notes == []


def test_prefix_cache_off_is_indistinguishable_and_says_why() -> None:
    analysis = analyze_prefix_cache(prefix_cache_run(750, 750, enabled=False))
    assert analysis.lengths[0].comparison.verdict == "indistinguishable"
    assert analysis.achieved_hit_rate == 0
    assert analysis.theoretical_hit_rate is not None and analysis.theoretical_hit_rate > 0.6
    assert any("prefix caching is off" in note for note in analysis.notes)
    no_server = analyze_prefix_cache(prefix_cache_run(750, 50).model_copy(update={"server": None}))
    assert no_server.theoretical_hit_rate is None
    assert any("--metrics-url" in note for note in no_server.notes)


def test_multiturn_summaries_by_turn_and_session() -> None:
    rows = []
    for session in range(2):
        for turn in range(3):
            prompt = 1000 + 300 * turn
            cached = 0 if turn == 0 else 1000 + 300 * (turn - 1) - 100
            rows.append(record(20 + turn, 100, session=session, turn=turn, prompt_tokens=prompt, cached_tokens=cached))
    rows[-1] = RequestRecord(started_at=0, status=500, error="x", e2e_ms=1, session=1, turn=2)
    run = add_multiturn_summaries(make_run("multiturn", rows, config={"sessions": 2}), turns=3)
    assert [run.summaries[f"cached_tokens[turn={t}]"].median for t in range(3)] == [0, 900, 1200]
    assert run.summaries["ttft_ms[turn=2]"].n == 1  # the failure has no TTFT
    assert run.scalars["sessions_completed"] == 1
    assert run.scalars["sessions"] == 2
    ratio = run.summaries["session_cached_ratio"]
    assert ratio.n == 2 and ratio.max == pytest.approx((900 + 1200) / (1000 + 1300 + 1600))


def test_tool_call_ids_and_draws() -> None:
    ids = {tool_call_id(s, t) for s in range(20) for t in range(20)}
    assert len(ids) == 400
    assert all(len(i) == 9 and i.isalnum() for i in ids)
    values = [draw(random.Random(seed), 100, 20) for seed in range(200)]
    assert min(values) >= 80 and max(values) <= 120
    assert draw(random.Random(0), 100, 0) == 100


@pytest.mark.parametrize("distribution", list(Distribution), ids=str)
def test_every_distribution_draws_around_its_mean_and_never_below_zero(distribution: Distribution) -> None:
    rng = random.Random(7)
    values = [draw(rng, 100, 30, distribution) for _ in range(20000)]
    assert min(values) >= 0
    assert statistics.fmean(values) == pytest.approx(100, rel=0.03)
    expected_deviation = {Distribution.UNIFORM: 30 / 3**0.5, Distribution.EXPONENTIAL: 100.0}.get(distribution, 30.0)
    assert statistics.stdev(values) == pytest.approx(expected_deviation, rel=0.05)
    assert draw(rng, 0, 30, distribution) == 0


def test_compare_runs_matches_metrics_and_warns_about_differences() -> None:
    on, off = prefix_cache_run(750, 50), prefix_cache_run(750, 740, enabled=False, seed=1)
    result = compare_runs(on, off, a_name="on", b_name="off")
    verdicts = {c.metric: c.verdict for c in result.comparisons}
    assert verdicts["ttft_hit_ms"] == "A faster"  # caching on hits faster
    assert verdicts["ttft_miss_ms"] == "indistinguishable"
    assert "ttft_hit_ms[tokens=2048]" not in verdicts  # one length: no per-length repeat of the same values
    assert {s.name for s in result.scalars} >= {"requests_per_second", "output_tokens_per_second"}
    assert result.warnings == []
    other = make_run("sweep", [record(10, 20)], config={"seed": 0, "concurrency": [4]})
    warnings = compare_runs(on, other).warnings
    assert any("different workloads" in w for w in warnings)
    assert any("concurrency" in w for w in warnings)


def test_samples_by_metric_names_levels_and_turns() -> None:
    from tokengate.bench.run import SweepLevel

    rows = [record(10 + i, 50, level=i % 2) for i in range(8)]
    levels = [SweepLevel(index=i, concurrency=c, started_at=0, ended_at=1, summaries={}, scalars={})
              for i, c in enumerate((1, 8))]  # fmt: skip
    samples = samples_by_metric(make_run("sweep", rows, levels=levels))
    assert samples["ttft_ms[concurrency=1]"] == [10, 12, 14, 16]
    assert samples["ttft_ms[concurrency=8]"] == [11, 13, 15, 17]
    turns = samples_by_metric(make_run("multiturn", [record(5, 9, turn=0), record(7, 9, turn=1)]))
    assert turns["ttft_ms[turn=1]"] == [7]


def test_per_length_metrics_when_several_lengths() -> None:
    run = prefix_cache_run(750, 50)
    for row in run.requests[:8]:
        row.target_prompt_tokens = 1024
    samples = samples_by_metric(run)
    assert len(samples["ttft_miss_ms[tokens=1024]"]) == 2 and len(samples["ttft_miss_ms[tokens=2048]"]) == 4
    assert [row.prompt_tokens for row in analyze_prefix_cache(run).lengths] == [1024, 2048]


def test_throughput_windows_spread_each_requests_tokens_over_its_generation() -> None:
    # One request generates 100 tokens evenly from 1 s to 11 s after the first start: 10 tok/s in every window.
    even = record(1000, 11000, tokens=100)
    assert throughput_windows([even]) == pytest.approx([10.0] * 10)
    # A second one bursts 50 tokens at its end (TTFT = E2E, as a starved API process sends them).
    burst = record(6000, 6000, tokens=50, started_at=even.started_at + 5)
    windows = throughput_windows([even, burst], windows=10)
    assert sum(w * 1.0 for w in windows) == pytest.approx(150)  # 1-s windows: every token counted once
    assert windows[9] == pytest.approx(60.0)  # the burst lands in the window of its last byte
    assert throughput_windows([record(5, 5, status=500)]) == []


def test_compare_gives_output_throughput_a_ci_and_a_verdict() -> None:
    """Before: throughput was one number per run, shown without a CI or a verdict."""

    def run(tokens_per_request: int, seed: int) -> BenchRun:
        rng = np.random.default_rng(seed)
        rows = [record(50, 1000, tokens=tokens_per_request + int(rng.integers(0, 3)),
                       started_at=1_700_000_000.0 + i * 0.1) for i in range(200)]  # fmt: skip
        return make_run("sweep", rows, config={"seed": 0, "concurrency": [4]})

    slow, fast, same = run(20, 0), run(40, 1), run(20, 2)
    verdict = {c.metric: c for c in compare_runs(slow, fast).comparisons}["output_tok_per_s"]
    assert verdict.verdict == "B faster" and verdict.higher_is_better
    assert verdict.ci_low is not None and verdict.ci_low > 0
    assert verdict.ratio == pytest.approx(2.0, rel=0.1)
    assert {c.metric: c for c in compare_runs(slow, same).comparisons}["output_tok_per_s"].verdict == (
        "indistinguishable"
    )
