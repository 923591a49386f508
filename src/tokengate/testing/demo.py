"""The end-to-end demo: a tiny model, real vLLM on the CPU, one streamed chat request, timings."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from pydantic import BaseModel

from tokengate.errors import EngineRequestError
from tokengate.testing.tiny_model import Family, create_tiny_model, parse_spec, serve_args_for
from tokengate.testing.vllm_server import VllmServer, VllmServerConfig, running_vllm_server

DEMO_PROMPT = "Say hello to Tokengate in one short sentence."


class ChatTiming(BaseModel):
    """One streamed chat completion, timed from the client."""

    content: str
    reasoning: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_ms: float
    total_ms: float

    @property
    def output_tokens_per_second(self) -> float:
        decode_seconds = (self.total_ms - self.time_to_first_token_ms) / 1000
        return (self.completion_tokens - 1) / decode_seconds if decode_seconds > 0 else 0.0


class DemoResult(BaseModel):
    family: Family
    model_dir: Path
    model_bytes: int
    create_seconds: float
    startup_seconds: float
    prompt: str
    chat: ChatTiming


def run_demo(
    family: Family = Family.QWEN3,
    *,
    work_dir: Path | None = None,
    max_tokens: int = 32,
    on_step: Callable[[str], None] = lambda _step: None,
) -> DemoResult:
    """Create a tiny model, serve it with real vLLM, send one chat request; vLLM is stopped on return."""
    work_dir = work_dir or Path(tempfile.mkdtemp(prefix="tokengate-demo-"))
    on_step(f"Creating a tiny {family} model in {work_dir / 'model'}")
    started = time.monotonic()
    model = create_tiny_model(work_dir / "model", parse_spec(family=family), overwrite=True)
    create_seconds = time.monotonic() - started
    on_step("Starting vLLM on the CPU (20-60 s)")
    config = VllmServerConfig(
        model=model.path,
        served_model_name=f"tiny-{family}",
        extra_args=serve_args_for(family),
        log_path=work_dir / "vllm.log",
    )
    with running_vllm_server(config) as server:
        on_step(f"vLLM healthy at {server.url} after {server.startup_seconds:.1f} s; sending a chat request")
        chat = stream_chat(server, DEMO_PROMPT, max_tokens=max_tokens)
        on_step("Stopping vLLM")
    return DemoResult(
        family=family,
        model_dir=model.path,
        model_bytes=model.size_bytes,
        create_seconds=create_seconds,
        startup_seconds=server.startup_seconds,
        prompt=DEMO_PROMPT,
        chat=chat,
    )


def stream_chat(server: VllmServer, prompt: str, *, max_tokens: int) -> ChatTiming:
    body = {
        "model": server.model_name,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    content: list[str] = []
    reasoning: list[str] = []
    finish_reason: str | None = None
    usage: dict[str, int] = {}
    first_token_at: float | None = None
    started = time.perf_counter()
    with (
        httpx.Client(timeout=120) as client,
        client.stream("POST", f"{server.openai_base_url}/chat/completions", json=body) as response,
    ):
        if response.status_code != 200:
            raise EngineRequestError(f"chat request failed with {response.status_code}: {response.read()!r}")
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line.removeprefix("data: "))
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices", []):
                delta = choice.get("delta", {})
                text = delta.get("content") or ""
                thought = delta.get("reasoning") or delta.get("reasoning_content") or ""
                if (text or thought) and first_token_at is None:
                    first_token_at = time.perf_counter()
                content.append(text)
                reasoning.append(thought)
                finish_reason = choice.get("finish_reason") or finish_reason
    ended = time.perf_counter()
    return ChatTiming(
        content="".join(content),
        reasoning="".join(reasoning),
        finish_reason=finish_reason,
        prompt_tokens=usage.get("prompt_tokens", 0),
        completion_tokens=usage.get("completion_tokens", 0),
        time_to_first_token_ms=((first_token_at or ended) - started) * 1000,
        total_ms=(ended - started) * 1000,
    )
