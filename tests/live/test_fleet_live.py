"""`up`, `status`, `down` on real vLLM (CPU): healthy engines, named deaths, nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tokengate.engine.state import StateDir
from tokengate.processes import group_alive
from tokengate.testing.process_scan import processes_mentioning
from tokengate.testing.tiny_model import create_tiny_model, parse_spec
from tokengate.testing.vllm_server import free_port, vllm_python

pytestmark = pytest.mark.live

QWEN3 = {"tool-call-parser": "hermes", "reasoning-parser": "qwen3", "enable-auto-tool-choice": True}
CPU_ARGS = {"enforce-eager": True, "max-model-len": 4096, "kv-cache-memory-bytes": 64 * 1024 * 1024}


def deployment(name: str, model: Path, **engine_args: object) -> dict[str, object]:
    return {
        "name": name,
        "model": str(model),
        "served_model_name": name,
        "gpu": "cpu",
        "port": free_port(),
        "command": [str(vllm_python()), "-m", "vllm.entrypoints.openai.api_server"],
        "health_timeout": 300,
        "env": {"VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1"},
        "engine_args": {**CPU_ARGS, **engine_args},
    }


def tokengate(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokengate", *args], capture_output=True, text=True, check=check, timeout=600
    )


def fleet_processes(state: Path) -> list[int]:
    """Every live process whose command line mentions this fleet's models (they live under its folder)."""
    return list(processes_mentioning(state))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_engine_available: None) -> Path:
    root = tmp_path_factory.mktemp("fleet")
    create_tiny_model(root / "tiny-qwen3", parse_spec(family="qwen3"))
    create_tiny_model(root / "tiny-mistral", parse_spec(family="mistral"))
    return root


def test_up_status_down_with_named_failures(models: Path) -> None:
    fleet_file = models / "fleet.yaml"
    fleet = {
        "state_dir": str(models / "state"),
        "deployments": [
            deployment("qwen", models / "tiny-qwen3", **{"enable-prefix-caching": True}),
            deployment("mistral", models / "tiny-mistral", **{"tokenizer-mode": "mistral"}),
            # 1 MB of KV cannot hold one 4096-token request: vLLM refuses and estimates 768.
            deployment("too-small", models / "tiny-qwen3", **{"kv-cache-memory-bytes": 1_000_000}),
            deployment("old-flag", models / "tiny-qwen3", **{"swap-space": 4}),
        ],
    }
    fleet_file.write_text(yaml.safe_dump(fleet))

    refused = tokengate("up", str(fleet_file))
    assert refused.returncode == 2
    assert "--swap-space was removed" in refused.stderr
    assert not (models / "state" / "engines").exists() or not list((models / "state" / "engines").iterdir())

    try:
        started = tokengate("up", str(fleet_file), "--force", "--json")
        assert started.returncode == 1, started.stderr  # two deployments fail on purpose
        results = {r["name"]: r for r in json.loads(started.stdout)}
        assert results["qwen"]["outcome"] == "healthy", results["qwen"]
        assert results["mistral"]["outcome"] == "healthy", results["mistral"]
        too_small = results["too-small"]
        assert too_small["outcome"] == "failed"
        assert too_small["reason"]["code"] == "kv-cache-too-small"
        assert too_small["reason"]["fix"] == "set --max-model-len 768"
        old_flag = results["old-flag"]
        assert old_flag["outcome"] == "failed"
        assert old_flag["reason"]["code"] == "unrecognized-argument"
        assert "--swap-space" in old_flag["reason"]["message"]

        qwen_url = results["qwen"]["url"]
        prompt = " ".join(f"line {i} of a prompt long enough to fill blocks." for i in range(80))
        for _ in range(2):
            body = {"model": "qwen", "prompt": prompt, "max_tokens": 1}
            assert httpx.post(f"{qwen_url}/v1/completions", json=body, timeout=120).status_code == 200

        statuses = {s["name"]: s for s in json.loads(tokengate("status", str(fleet_file), "--json").stdout)}
        assert statuses["qwen"]["healthy"] and statuses["mistral"]["healthy"]
        assert not statuses["too-small"]["running"]
        metrics = statuses["qwen"]["metrics"]
        assert metrics["prefix_cache_hits"] >= 128
        assert metrics["prefix_cache_queries"] > metrics["prefix_cache_hits"]
        assert statuses["qwen"]["pid"] > 0

        again = tokengate("up", str(fleet_file), "--force", "--only", "qwen", "--json")
        assert json.loads(again.stdout)[0]["outcome"] == "already-running"
    finally:
        stopped = tokengate("down", str(fleet_file), "--json")
    assert {r["name"] for r in json.loads(stopped.stdout) if r["outcome"] == "stopped"} == {"qwen", "mistral"}
    assert fleet_processes(models) == []
    assert StateDir(models / "state").records() == []


def test_sigkill_during_up_then_down_leaves_no_orphan(models: Path) -> None:
    fleet_file = models / "killed.yaml"
    state = models / "killed-state"
    fleet_file.write_text(
        yaml.safe_dump({"state_dir": str(state), "deployments": [deployment("victim", models / "tiny-qwen3", **QWEN3)]})
    )
    up = subprocess.Popen(
        [sys.executable, "-m", "tokengate", "up", str(fleet_file)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        record = None
        for _ in range(600):
            record = StateDir(state).load("victim")
            if record is not None:
                break
            time.sleep(0.1)
        assert record is not None, "up never recorded the engine it started"
        time.sleep(3)  # vLLM is importing and forking its engine core now
        os.kill(up.pid, signal.SIGKILL)
        up.wait(timeout=10)
        assert group_alive(record.pgid), "the engine should outlive tokengate until `down`"
    finally:
        down = tokengate("down", str(fleet_file), "--json")
    assert json.loads(down.stdout)[0]["outcome"] == "stopped"
    assert not group_alive(record.pgid)
    deadline = time.monotonic() + 20
    while fleet_processes(state.parent / "tiny-qwen3") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert fleet_processes(models) == []
