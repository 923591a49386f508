"""The planner's KV-cache numbers against what real vLLM (CPU) logs for the same model and memory."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tokengate.engine.log import (
    KvCacheReport,
    NotEnoughKvCache,
    parse_kv_cache_report,
    parse_not_enough_kv_cache,
)
from tokengate.fleet.engine_args import EngineArgs
from tokengate.models import find_gpu, load_model_spec
from tokengate.plan.planner import Deployment, Plan, make_plan
from tokengate.testing.tiny_model import create_tiny_model, parse_spec
from tokengate.testing.vllm_server import VllmServer, VllmServerConfig, launch_vllm_server

pytestmark = pytest.mark.live

MIB = 1024 * 1024
BOOTS_AT_ONCE = 3  # about 3 GiB each
BOOT_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class Case:
    name: str
    shape: dict[str, int]
    kv_cache_memory_bytes: int
    max_model_len: int


CASES = (
    Case("2x4h2kv64d-64MiB", {"layers": 2, "heads": 4, "kv_heads": 2, "head_dim": 64}, 64 * MIB, 4096),
    Case("2x4h2kv64d-200MB", {"layers": 2, "heads": 4, "kv_heads": 2, "head_dim": 64}, 200_000_000, 8192),
    Case("3x8h8kv32d-64MiB", {"layers": 3, "heads": 8, "kv_heads": 8, "head_dim": 32}, 64 * MIB, 4096),
    Case("3x8h8kv32d-200MB", {"layers": 3, "heads": 8, "kv_heads": 8, "head_dim": 32}, 200_000_000, 8192),
    Case("1x4h1kv128d-64MiB", {"layers": 1, "hidden": 128, "heads": 4, "kv_heads": 1, "head_dim": 128}, 64 * MIB, 8192),
    Case(
        "1x4h1kv128d-200MB", {"layers": 1, "hidden": 128, "heads": 4, "kv_heads": 1, "head_dim": 128}, 200_000_000, 2048
    ),
)
TOO_SMALL = Case("2x4h2kv64d-1MB", {"layers": 2, "heads": 4, "kv_heads": 2, "head_dim": 64}, 1_000_000, 8192)


def planned(case: Case, model_dir: Path) -> Plan:
    engine = EngineArgs(kv_cache_memory_bytes=case.kv_cache_memory_bytes, max_model_len=case.max_model_len)
    return make_plan(Deployment(model=load_model_spec(str(model_dir)), gpu=find_gpu("cpu"), engine=engine))


def wait_for_verdict(server: VllmServer) -> str:
    """Return the log once vLLM has reported its KV cache size or died; never waits for /health."""
    deadline = time.monotonic() + BOOT_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        log = server.process.log_path.read_text(errors="replace")
        if parse_kv_cache_report(log) or not server.process.is_running():
            time.sleep(0.5)  # let an exiting engine finish writing its traceback
            return server.process.log_path.read_text(errors="replace")
        time.sleep(0.5)
    raise AssertionError(f"vLLM gave no KV cache verdict in {BOOT_TIMEOUT_SECONDS} s: {server.process.log_tail()}")


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory, tiny_engine_available: None) -> dict[str, tuple[Plan, str]]:
    tmp = tmp_path_factory.mktemp("planner")
    cases = [*CASES, TOO_SMALL]
    results: dict[str, tuple[Plan, str]] = {}
    for start in range(0, len(cases), BOOTS_AT_ONCE):
        batch = cases[start : start + BOOTS_AT_ONCE]
        servers: list[tuple[Case, Plan, VllmServer]] = []
        try:
            for case in batch:
                model = create_tiny_model(tmp / case.name, parse_spec(family="qwen3", **case.shape)).path
                config = VllmServerConfig(
                    model=model,
                    served_model_name=case.name,
                    max_model_len=case.max_model_len,
                    kv_cache_memory_bytes=case.kv_cache_memory_bytes,
                    log_path=tmp / f"{case.name}.log",
                )
                servers.append((case, planned(case, model), launch_vllm_server(config)))
            for case, plan, server in servers:
                results[case.name] = (plan, wait_for_verdict(server))
        finally:
            for _, _, server in servers:
                server.stop()
    return results


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_kv_cache_tokens_match_vllm(verdicts: dict[str, tuple[Plan, str]], case: Case) -> None:
    plan, log = verdicts[case.name]
    report = parse_kv_cache_report(log)
    assert isinstance(report, KvCacheReport), log[-3000:]
    assert report.device == "CPU"
    assert plan.block_size == 128
    assert report.max_model_len == plan.max_model_len
    assert report.kv_cache_tokens == plan.kv_cache_tokens
    assert report.max_concurrency == pytest.approx(round(plan.max_concurrency, 2), abs=0.005)
    assert plan.fits_one_request


def test_predicted_startup_error_is_raised_by_vllm(verdicts: dict[str, tuple[Plan, str]]) -> None:
    plan, log = verdicts[TOO_SMALL.name]
    assert not plan.fits_one_request
    assert any(finding.code == "kv-cache-too-small" for finding in plan.findings) or not plan.findings
    error = parse_not_enough_kv_cache(log)
    assert isinstance(error, NotEnoughKvCache), log[-3000:]
    assert error.max_model_len == plan.max_model_len
    assert error.estimated_max_model_len == plan.max_model_len_fit
    assert error.needed_gib == pytest.approx(plan.kv_bytes_needed / 1024**3, abs=0.005)
