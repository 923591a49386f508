from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
    assert "demo" in result.output


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
