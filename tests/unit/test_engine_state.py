from __future__ import annotations

import time
from pathlib import Path

from tokengate.bench.server_metrics import parse_metrics
from tokengate.engine.diagnosis import diagnose
from tokengate.engine.state import EngineRecord, StateDir, is_running
from tokengate.processes import ProcessGroup, process_start_ticks


def record(name: str, pgid: int, ticks: int | None, tmp_path: Path) -> EngineRecord:
    return EngineRecord(
        name=name, pgid=pgid, start_ticks=ticks, url="http://x", log_path=tmp_path / "l", argv=["x"],
        started_at=time.time(),
    )  # fmt: skip


def test_records_round_trip_and_recognise_a_live_group(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    process = ProcessGroup.start(["sleep", "30"], log_path=tmp_path / "log")
    try:
        state.save(record("a", process.pid, process_start_ticks(process.pid), tmp_path))
        loaded = state.load("a")
        assert loaded is not None
        assert is_running(loaded)
        # A reused pid (another process now) is not ours.
        assert not is_running(loaded.model_copy(update={"start_ticks": (loaded.start_ticks or 0) + 1}))
    finally:
        process.stop()
    assert not is_running(loaded)
    state.remove("a")
    assert state.records() == []


def test_a_corrupt_record_is_ignored(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.engines.mkdir(parents=True)
    (state.engines / "broken.json").write_text("{not json")
    assert state.records() == []


DEATHS = {
    "kv-cache-too-small": "ValueError: To serve at least one request with the model's max seq len (8192), (0.01 GiB "
    "KV cache is needed, which is larger than the available KV cache memory (0.00 GiB). Based on the available "
    "memory, the estimated maximum model length is 768. Try increasing",
    "unrecognized-argument": "api_server.py: error: unrecognized arguments: --swap-space 4",
    "auto-tool-choice-parser": "TypeError: Error: --enable-auto-tool-choice requires --tool-call-parser",
    "free-memory-below-utilization": "ValueError: Free memory on device cuda:0 (20.1/23.57 GiB) on startup is less "
    "than desired GPU memory utilization (0.95, 22.39 GiB). Decrease GPU memory utilization",
    "cpu-memory-below-utilization": "ValueError: Available memory on node 0 (10.0/23.0 GiB) on startup is less than "
    "desired CPU memory utilization (0.9, 20.7 GiB).",
    "out-of-memory": "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
    "unsupported-attention": "RuntimeError: Unsupported CPU attention configuration",
    "port-in-use": "OSError: [Errno 98] Address already in use",
    "model-not-found": "OSError: /models/x does not appear to have a file named config.json",
}


def test_every_known_death_is_named() -> None:
    for code, line in DEATHS.items():
        reason = diagnose("INFO starting\n" + line + "\nmore noise")
        assert reason is not None, code
        assert reason.code == code


def test_removed_flag_gets_its_replacement_and_kv_its_length() -> None:
    reason = diagnose(DEATHS["unrecognized-argument"])
    assert reason is not None
    assert "removed in 0.12.0" in reason.message
    kv = diagnose(DEATHS["kv-cache-too-small"])
    assert kv is not None
    assert kv.fix == "set --max-model-len 768"
    assert diagnose("all fine") is None


def test_metrics_sum_over_labels() -> None:
    text = (
        "# TYPE vllm:prefix_cache_queries counter\n"
        'vllm:prefix_cache_queries_total{model_name="a"} 2048.0\n'
        "# TYPE vllm:prefix_cache_hits counter\n"
        'vllm:prefix_cache_hits_total{model_name="a"} 1024.0\n'
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        'vllm:kv_cache_usage_perc{model_name="a"} 0.25\n'
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{model_name="a"} 3.0\n'
    )
    metrics = parse_metrics(text)
    assert metrics.prefix_cache_hit_rate == 0.5
    assert (metrics.kv_cache_usage, metrics.requests_running, metrics.requests_waiting) == (0.25, 3.0, None)
