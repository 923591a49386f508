from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tokengate import __version__
from tokengate.cli.main import app

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"tokengate {__version__}"


def test_help_lists_command_groups_with_descriptions() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "tiny-model" in result.output
    assert "Create tiny random-weight models" in result.output
    for command in ("plan", "check", "up", "down", "status", "logs", "chat", "schema"):
        assert command in result.output


def test_tiny_model_create_json(tmp_path: Path) -> None:
    result = runner.invoke(app, ["tiny-model", "create", str(tmp_path / "m"), "--family", "qwen3", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["spec"]["family"] == "qwen3"
    assert "model.safetensors" in document["files"]


def test_bad_argument_exits_2_with_the_field_and_no_traceback(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "tokengate", "tiny-model", "create", str(tmp_path / "m"),
         "--family", "qwen3", "--head-dim", "16"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert completed.returncode == 2
    assert "head_dim 16 is not served by vLLM's CPU attention" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "m").exists()


def test_unknown_family_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["tiny-model", "create", str(tmp_path / "m"), "--family", "llama"])
    assert result.exit_code == 2
    assert "llama" in result.output


def test_plan_json_has_the_documented_keys() -> None:
    result = runner.invoke(
        app, ["plan", "--model", "Qwen/Qwen3-32B-AWQ", "--gpu", "rtx-3090", "--tp", "2", "--max-model-len", "32768",
              "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    for key in ("kv_bytes_per_token", "kv_cache_tokens", "max_concurrency", "kv_bytes_needed", "max_model_len_fit",
                "available_kv_bytes", "budget", "findings"):  # fmt: skip
        assert key in document
    assert document["kv_bytes_per_token"] == 2 * 64 * 4 * 128 * 2  # 4 of 8 KV heads per rank
    assert [term["name"] for term in document["budget"]["terms"]][:2] == ["requested", "weights"]


def test_check_exits_1_on_errors_and_0_when_clean() -> None:
    bad = runner.invoke(app, ["check", "--model", "Qwen/Qwen3-8B", "--vllm-args", "--swap-space 4", "--json"])
    assert bad.exit_code == 1
    assert "removed-flag" in {f["code"] for f in json.loads(bad.stdout)["findings"]}
    good_args = (
        "--tool-call-parser hermes --enable-auto-tool-choice --reasoning-parser qwen3 --max-model-len 32768 "
        "--enable-prompt-tokens-details"
    )
    good = runner.invoke(app, ["check", "--model", "Qwen/Qwen3-8B", "--vllm-args", good_args])
    assert good.exit_code == 0, good.output
    assert "No findings" in good.output


def test_check_takes_the_model_from_the_vllm_command() -> None:
    result = runner.invoke(app, ["check", "--vllm-args", "vllm serve Qwen/Qwen3-8B --swap-space 4", "--json"])
    assert json.loads(result.stdout)["model_id"] == "Qwen/Qwen3-8B"


def test_unknown_model_and_gpu_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = runner.invoke(app, ["plan", "--model", "acme/nothing"])
    assert model.exit_code == 2
    assert "bundled catalog" in model.output
    gpu = runner.invoke(app, ["plan", "--model", "Qwen/Qwen3-8B", "--gpu", "voodoo"])
    assert gpu.exit_code == 2
    assert "known: rtx-3090" in gpu.output
    missing = runner.invoke(app, ["check"])
    assert missing.exit_code == 2


def test_catalog_listings() -> None:
    models = runner.invoke(app, ["models", "--json"])
    assert any(entry["id"] == "openai/gpt-oss-20b" for entry in json.loads(models.stdout))
    gpus = runner.invoke(app, ["gpus", "--json"])
    assert any(entry["name"] == "gb10" for entry in json.loads(gpus.stdout))
