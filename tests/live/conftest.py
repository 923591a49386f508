"""Session-wide real vLLM servers (CPU build) on tiny models made by `tokengate tiny-model create`.

Both servers start once, in parallel, for the whole session: each takes about
3 GiB and 20-60 s to boot. With TOKENGATE_REQUIRE_LIVE=1 (CI) a missing engine
fails the run instead of skipping it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokengate.errors import EngineNotInstalledError
from tokengate.testing.tiny_model import Family, serve_args_for
from tokengate.testing.vllm_server import (
    VllmServer,
    VllmServerConfig,
    launch_vllm_server,
    vllm_python,
    wait_until_healthy,
)

pytestmark = pytest.mark.live


def _require_engine() -> None:
    try:
        vllm_python()
    except EngineNotInstalledError as exc:
        if os.environ.get("TOKENGATE_REQUIRE_LIVE") == "1":
            pytest.fail(f"TOKENGATE_REQUIRE_LIVE=1 but {exc}", pytrace=False)
        pytest.skip(str(exc))


def _create_with_cli(directory: Path, family: Family) -> Path:
    """Make the model through the real CLI, so the live tests prove the product command."""
    subprocess.run(
        [sys.executable, "-m", "tokengate", "tiny-model", "create", str(directory), "--family", family.value],
        check=True,
        capture_output=True,
    )
    return directory


@pytest.fixture(scope="session")
def tiny_engine_available() -> None:
    """Skip (or, in CI, fail) when the CPU build of vLLM is not installed."""
    _require_engine()


@pytest.fixture(scope="session")
def tiny_servers(
    tmp_path_factory: pytest.TempPathFactory, tiny_engine_available: None
) -> Iterator[dict[Family, VllmServer]]:
    tmp = tmp_path_factory.mktemp("live")
    servers: dict[Family, VllmServer] = {}
    try:
        for family in (Family.QWEN3, Family.MISTRAL):  # launched together, so they boot in parallel
            # Mistral reports cached prompt tokens in `usage` (what the ledger and Anthropic's
            # cache_read_input_tokens read); qwen3 does not, so bench's engine-counter path is proven too.
            details = ["--enable-prompt-tokens-details"] if family is Family.MISTRAL else []
            config = VllmServerConfig(
                model=_create_with_cli(tmp / f"tiny-{family}", family),
                served_model_name=f"tiny-{family}",
                extra_args=[*serve_args_for(family), *details],
                log_path=tmp / f"vllm-{family}.log",
            )
            servers[family] = launch_vllm_server(config)
        for server in servers.values():
            wait_until_healthy(server)
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="session")
def qwen3_server(tiny_servers: dict[Family, VllmServer]) -> VllmServer:
    return tiny_servers[Family.QWEN3]


@pytest.fixture(scope="session")
def mistral_server(tiny_servers: dict[Family, VllmServer]) -> VllmServer:
    return tiny_servers[Family.MISTRAL]


@pytest.fixture(params=[Family.QWEN3, Family.MISTRAL], ids=str)
def any_server(request: pytest.FixtureRequest, tiny_servers: dict[Family, VllmServer]) -> VllmServer:
    return tiny_servers[request.param]


@pytest.fixture(scope="session")
def qwen3_plain_server(tmp_path_factory: pytest.TempPathFactory, tiny_engine_available: None) -> Iterator[VllmServer]:
    """Tiny qwen3 started the way a hurried operator would: parsers set, but without `--enable-auto-tool-choice`
    and with prefix caching switched off. Checks and benchmarks must notice both; started only when asked for."""
    tmp = tmp_path_factory.mktemp("plain")
    config = VllmServerConfig(
        model=_create_with_cli(tmp / "tiny-qwen3", Family.QWEN3),
        served_model_name="tiny-qwen3-plain",
        extra_args=["--tool-call-parser", "hermes", "--reasoning-parser", "qwen3", "--no-enable-prefix-caching"],
        log_path=tmp / "vllm-plain.log",
    )
    server = launch_vllm_server(config)
    try:
        wait_until_healthy(server)
        yield server
    finally:
        server.stop()
