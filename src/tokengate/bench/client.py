"""The timing client: streamed completions against any OpenAI-compatible URL, timed from the client.

`timed_chat` is one synchronous request (for `tokengate chat`); `BenchClient` is the asyncio client the
workloads share (aiohttp, one pooled session): streamed requests → `RequestRecord`, plus the engine's
/tokenize, /v1/models, /version and /metrics.

Timing follows `vllm bench serve`: TTFT is the arrival of the first event that carries a choice (vLLM sends
the role chunk with the first token), ITL the gaps between later choice events, E2E the last choice event.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
from pydantic import BaseModel

from tokengate.bench.records import RequestRecord
from tokengate.bench.server_metrics import EngineMetrics, parse_metrics
from tokengate.bench.target import BenchTarget
from tokengate.errors import EngineRequestError

# vLLM's server (uvicorn, VLLM_HTTP_TIMEOUT_KEEP_ALIVE) closes a connection after 5 s idle. A client that reuses
# one about that old races the close: the request goes out as the server hangs up and fails with "Server
# disconnected". Clients drop idle connections well before that instead (aiohttp's own default is 15 s).
ENGINE_KEEPALIVE_SECONDS = 3.0


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


@dataclass
class Streamed:
    """A timed request and the text it produced (`content`, else `reasoning`: what a client would replay)."""

    record: RequestRecord
    content: str = ""
    reasoning: str = ""

    @property
    def reply(self) -> str:
        return self.content or self.reasoning


@dataclass
class ServerInfo:
    """What the server says about itself; every field None when it does not say."""

    max_model_len: int | None = None
    model_root: str | None = None
    version: str | None = None
    tokenize: bool = False  # POST /tokenize answers


@dataclass
class _StreamState:
    started: float
    first_at: float | None = None
    last_at: float | None = None
    itl_ms: list[float] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    error: str | None = None

    def event(self, data: dict[str, Any], at: float) -> None:
        if "error" in data and not data.get("choices"):
            self.error = str(data["error"].get("message", data["error"]) if isinstance(data["error"], dict) else data)
        if data.get("usage"):
            self.usage = data["usage"]
        choices = data.get("choices")
        if not choices:
            return
        if self.first_at is None:
            self.first_at = at
        elif self.last_at is not None:
            self.itl_ms.append((at - self.last_at) * 1000)
        self.last_at = at
        delta = choices[0].get("delta") or {}
        text = choices[0].get("text")  # /v1/completions
        self.content.append(delta.get("content") or text or "")
        self.reasoning.append(delta.get("reasoning") or delta.get("reasoning_content") or "")


class BenchClient:
    """One aiohttp session against a target; use as `async with BenchClient(target) as client:`."""

    def __init__(
        self, target: BenchTarget, *, timeout: float = 600.0, keepalive_seconds: float = ENGINE_KEEPALIVE_SECONDS
    ) -> None:
        self.target = target
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._keepalive_seconds = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> BenchClient:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=self._keepalive_seconds)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use BenchClient as `async with`")
        return self._session

    async def stream(self, path: str, body: dict[str, Any], **labels: Any) -> Streamed:
        """POST a streamed request to `path` (e.g. /v1/chat/completions) and time it; never raises for
        HTTP or transport errors: they become `status` and `error` on the record."""
        body = {**body, "model": self.target.model, "stream": True, "stream_options": {"include_usage": True}}
        started_at = time.time()
        state = _StreamState(started=time.perf_counter())
        status = 0
        try:
            async with self.session.post(
                f"{self.target.base_url}{path}", json=body, headers=self.target.headers
            ) as response:
                status = response.status
                if status != 200:
                    state.error = (await response.text())[:500]
                else:
                    await _read_events(response, state)
        except (TimeoutError, aiohttp.ClientError) as exc:
            state.error = f"{type(exc).__name__}: {exc}"
        return _streamed(state, status, started_at, labels)

    async def tokenize(self, *, prompt: str | None = None, messages: list[dict[str, Any]] | None = None) -> int | None:
        """Token count from the engine's POST /tokenize (a chat prompt when `messages`); None if unavailable."""
        body: dict[str, Any] = {"model": self.target.model}
        body.update(
            {"messages": messages, "add_generation_prompt": True} if messages is not None else {"prompt": prompt}
        )
        try:
            async with self.session.post(
                f"{self.target.base_url}/tokenize", json=body, headers=self.target.headers
            ) as response:
                if response.status != 200:
                    return None
                count = (await response.json()).get("count")
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return None
        return int(count) if isinstance(count, int) else None

    async def server_info(self) -> ServerInfo:
        info = ServerInfo()
        models = await self._models()
        entries = [m for m in models.get("data", []) if isinstance(m, dict)]
        served = [m.get("id") for m in entries]
        entry = next((m for m in entries if m.get("id") == self.target.model), None)
        if entry is None:
            raise EngineRequestError(f"{self.target.base_url} does not serve {self.target.model!r}; it serves {served}")
        if isinstance(entry.get("max_model_len"), int):
            info.max_model_len = entry["max_model_len"]
        info.model_root = entry.get("root")
        version = await self._get_json(f"{self.target.scrape_url}/version", absolute=True)
        info.version = version.get("version") if version else None
        info.tokenize = await self.tokenize(prompt="hello") is not None
        return info

    async def _models(self) -> dict[str, Any]:
        url = f"{self.target.base_url}/v1/models"
        try:
            async with self.session.get(url, headers=self.target.headers) as response:
                if response.status in (401, 403):
                    raise EngineRequestError(
                        f"{url} answered {response.status}: pass the API key in $TOKENGATE_API_KEY (or --api-key-env)"
                    )
                if response.status != 200:
                    raise EngineRequestError(f"{url} answered {response.status}: {(await response.text())[:200]}")
                document = await response.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise EngineRequestError(
                f"{url} did not answer ({exc}): is the server up, and is the URL its root?"
            ) from None
        if not isinstance(document, dict):
            raise EngineRequestError(f"{url} did not answer a model list: is the URL an OpenAI-compatible server?")
        return document

    async def metrics(self) -> EngineMetrics | None:
        """The engine's /metrics at `target.scrape_url`; None if unreachable or not vLLM's."""
        try:
            async with self.session.get(
                f"{self.target.scrape_url}/metrics", timeout=aiohttp.ClientTimeout(total=5)
            ) as response:
                if response.status != 200:
                    return None
                metrics = parse_metrics(await response.text())
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return None
        return metrics if metrics.is_vllm else None

    async def _get_json(self, path: str, *, absolute: bool = False) -> dict[str, Any] | None:
        url = path if absolute else f"{self.target.base_url}{path}"
        try:
            async with self.session.get(url, headers=self.target.headers) as response:
                if response.status != 200:
                    return None
                document = await response.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return None
        return document if isinstance(document, dict) else None


async def _read_events(response: aiohttp.ClientResponse, state: _StreamState) -> None:
    buffer = b""
    async for chunk in response.content.iter_any():
        at = time.perf_counter()
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return
            try:
                state.event(json.loads(payload), at)
            except (ValueError, AttributeError):
                state.error = f"unreadable stream event: {payload[:200]!r}"


def _streamed(state: _StreamState, status: int, started_at: float, labels: dict[str, Any]) -> Streamed:
    ended = state.last_at or time.perf_counter()
    if status == 200 and state.first_at is None and state.error is None:
        state.error = "the stream ended without a token"
    usage = state.usage
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    record = RequestRecord(
        started_at=started_at,
        status=status,
        error=state.error,
        ttft_ms=(state.first_at - state.started) * 1000 if state.first_at is not None else None,
        itl_ms=state.itl_ms,
        e2e_ms=(ended - state.started) * 1000,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        cached_tokens=int(cached) if isinstance(cached, int) else None,
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cached_tokens_source="usage" if isinstance(cached, int) else None,
        **labels,
    )
    return Streamed(record=record, content="".join(state.content), reasoning="".join(state.reasoning))
