"""Results files: the versioned schema round-trips, never stores the API key, and refuses what it cannot read.
Also the builders of synthetic runs the other bench tests share."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokengate.bench.aggregate import Slo, latency_summaries, throughput_scalars
from tokengate.bench.records import RequestRecord
from tokengate.bench.run import SCHEMA_VERSION, BenchRun, SweepLevel
from tokengate.bench.server_metrics import ServerDeltas
from tokengate.bench.target import BenchTarget
from tokengate.errors import InvalidInputError

TARGET = BenchTarget(base_url="http://127.0.0.1:8000/v1/", model="tiny-qwen3", api_key="sk-secret-123")


def record(ttft: float, e2e: float, *, tokens: int = 8, **fields: object) -> RequestRecord:
    gaps = [(e2e - ttft) / (tokens - 1)] * (tokens - 1) if tokens > 1 else []
    values: dict[str, object] = {
        "started_at": 1_700_000_000.0, "status": 200, "ttft_ms": ttft, "itl_ms": gaps, "e2e_ms": e2e,
        "prompt_tokens": 100, "completion_tokens": tokens,
    }  # fmt: skip
    values.update(fields)
    return RequestRecord.model_validate(values)


def make_run(workload: str, records: list[RequestRecord], **fields: object) -> BenchRun:
    values: dict[str, object] = {
        "workload": workload, "target": TARGET, "config": {"seed": 0}, "started_at": 1_700_000_000.0,
        "ended_at": 1_700_000_010.0, "requests": records, "summaries": latency_summaries(records),
        "scalars": throughput_scalars(records, 10.0), "environment": {"python": "3.11"},
    }  # fmt: skip
    values.update(fields)
    return BenchRun.model_validate(values)


def test_round_trip_keeps_everything_but_the_api_key(tmp_path: Path) -> None:
    records = [record(10 + i, 50 + i, session=i % 2, turn=i // 2, cached_tokens=i * 10) for i in range(6)]
    records.append(RequestRecord(started_at=1.0, status=0, error="ConnectError", e2e_ms=3.0))
    level = SweepLevel(index=0, concurrency=2, started_at=1.0, ended_at=2.0, summaries={}, scalars={"x": 1.0})
    run = make_run(
        "sweep", records, engine_config={"max_model_len": 8192}, levels=[level], interrupted=True,
        server=ServerDeltas(prefix_cache_queries=600, prefix_cache_hits=300, hit_rate=0.5, block_size=128),
    )  # fmt: skip
    path = run.save(tmp_path / "deep" / "run.json")
    text = path.read_text()
    assert "sk-secret-123" not in text
    assert "api_key" not in text
    loaded = BenchRun.load(path)
    assert loaded.target.api_key is None
    assert loaded.model_dump(exclude={"target"}) == run.model_dump(exclude={"target"})
    assert loaded.target.base_url == "http://127.0.0.1:8000"  # the root: no trailing /v1
    document = json.loads(text)
    assert document["schema_version"] == SCHEMA_VERSION == 1
    assert set(document["summaries"]) >= {"ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"}
    assert set(document["scalars"]) >= {
        "requests_per_second", "output_tokens_per_second", "goodput_per_second", "completed_requests",
        "failed_requests",
    }  # fmt: skip


def test_load_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no such results file"):
        BenchRun.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(InvalidInputError, match="not JSON"):
        BenchRun.load(tmp_path / "bad.json")
    good = json.loads(make_run("sweep", [record(1, 2)]).model_dump_json())
    (tmp_path / "future.json").write_text(json.dumps({**good, "schema_version": 2}))
    with pytest.raises(InvalidInputError, match="schema_version 2"):
        BenchRun.load(tmp_path / "future.json")
    (tmp_path / "field.json").write_text(json.dumps({**good, "started_at": "yesterday"}))
    with pytest.raises(InvalidInputError, match="field started_at"):
        BenchRun.load(tmp_path / "field.json")


def test_target_validation_names_the_field() -> None:
    with pytest.raises(InvalidInputError, match="http://"):
        BenchTarget(base_url="localhost:8000", model="m")
    with pytest.raises(InvalidInputError, match="--model"):
        BenchTarget(base_url="http://localhost:8000", model=" ")
    gateway = BenchTarget(base_url="http://gw:8080", model="m", metrics_url="http://engine:8000/")
    assert gateway.scrape_url == "http://engine:8000"
    assert BenchTarget(base_url="http://e:1", model="m").scrape_url == "http://e:1"
    assert "sk-" not in repr(TARGET)


def test_tpot_and_cached_ratio() -> None:
    row = record(100, 450, tokens=8, cached_tokens=25)
    assert row.tpot_ms == pytest.approx(50)
    assert row.cached_ratio == 0.25
    assert record(100, 100, tokens=1).tpot_ms is None
    assert RequestRecord(started_at=0, status=0, e2e_ms=1).tpot_ms is None


def test_throughput_and_goodput_over_the_window() -> None:
    rows = [record(100, 450, tokens=8), record(300, 650, tokens=8), record(100, 1200, tokens=8)]
    rows.append(RequestRecord(started_at=0, status=500, error="boom", e2e_ms=5))
    scalars = throughput_scalars(rows, 2.0, Slo(ttft_ms=200, tpot_ms=100))
    assert scalars["completed_requests"] == 3
    assert scalars["failed_requests"] == 1
    assert scalars["requests_per_second"] == 1.5
    assert scalars["output_tokens_per_second"] == 12
    assert scalars["goodput_per_second"] == 0.5  # only the first meets both bounds
    assert scalars["goodput_fraction"] == 0.25
    assert throughput_scalars(rows, 2.0)["goodput_per_second"] == 1.5  # no SLO: every success counts
    summaries = latency_summaries(rows)
    assert summaries["ttft_ms"].n == 3  # the failure has no latency
    assert summaries["itl_ms"].n == 21
