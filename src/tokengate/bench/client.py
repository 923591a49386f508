"""The timing client: one streamed chat completion against any OpenAI-compatible URL, timed from the client."""

from __future__ import annotations

import json
import time

import httpx
from pydantic import BaseModel

from tokengate.errors import EngineRequestError


class ChatTiming(BaseModel):
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


def timed_chat(
    base_url: str,
    model: str,
    prompt: str,
    *,
    max_tokens: int = 32,
    api_key: str | None = None,
    timeout: float = 120.0,
) -> ChatTiming:
    """Stream one chat request; `base_url` is the server root (http://host:port), without /v1."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    parts: dict[str, list[str]] = {"content": [], "reasoning": []}
    finish_reason: str | None = None
    usage: dict[str, int] = {}
    first_token_at: float | None = None
    started = time.perf_counter()
    try:
        with httpx.stream(
            "POST", f"{base_url}/v1/chat/completions", json=body, headers=headers, timeout=timeout
        ) as response:
            if response.status_code != 200:
                raise EngineRequestError(f"{base_url} answered {response.status_code}: {response.read().decode()}")
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
                    parts["content"].append(text)
                    parts["reasoning"].append(thought)
                    finish_reason = choice.get("finish_reason") or finish_reason
    except httpx.HTTPError as exc:
        raise EngineRequestError(f"cannot reach {base_url}: {exc}") from None
    ended = time.perf_counter()
    return ChatTiming(
        content="".join(parts["content"]),
        reasoning="".join(parts["reasoning"]),
        finish_reason=finish_reason,
        prompt_tokens=usage.get("prompt_tokens", 0),
        completion_tokens=usage.get("completion_tokens", 0),
        time_to_first_token_ms=((first_token_at or ended) - started) * 1000,
        total_ms=(ended - started) * 1000,
    )
