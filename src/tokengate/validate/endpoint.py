"""HTTP to one OpenAI-compatible server: plain JSON calls, timed streams, Prometheus counters."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
from pydantic import BaseModel

from tokengate.bench.client import ENGINE_KEEPALIVE_SECONDS
from tokengate.validate.stream import StreamedChat, assemble

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)", re.M)


class Reply(BaseModel):
    """A non-streamed answer: the status, the JSON body (if any), the server's error message (if any)."""

    status: int
    body: dict[str, Any] = {}
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def message(self) -> dict[str, Any]:
        choices = self.body.get("choices") or [{}]
        return choices[0].get("message") or {}

    @property
    def finish_reason(self) -> str | None:
        choices = self.body.get("choices") or [{}]
        return choices[0].get("finish_reason")


class Endpoint:
    """One server root (http://host:port); `transport` lets unit tests stand in for the network."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        limits = httpx.Limits(keepalive_expiry=ENGINE_KEEPALIVE_SECONDS)  # httpx keeps 5 s: the engine's own limit
        self.client = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, limits=limits, transport=transport
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def get(self, path: str) -> httpx.Response:
        return self.client.get(path)

    def post(self, path: str, body: dict[str, Any]) -> Reply:
        return _reply(self.client.post(path, json=body))

    def chat(self, body: dict[str, Any]) -> Reply:
        return self.post("/v1/chat/completions", body)

    def stream_chat(self, body: dict[str, Any]) -> tuple[Reply, StreamedChat]:
        """Stream a chat completion; a non-200 answer comes back as the Reply, with an empty stream."""
        body = {**body, "stream": True}
        started = time.perf_counter()
        with self.client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                response.read()
                return _reply(response), StreamedChat()
            events = [
                ((time.perf_counter() - started) * 1000, line.removeprefix("data:").strip())
                for line in response.iter_lines()
                if line.startswith("data:")
            ]
        return Reply(status=200), assemble(events)

    def counters(self, path: str = "/metrics") -> dict[str, float]:
        """Prometheus samples summed over their labels, e.g. {"vllm:prefix_cache_hits_total": 512.0}."""
        response = self.client.get(path)
        response.raise_for_status()
        return parse_counters(response.text)

    def labels(self, path: str, metric: str) -> dict[str, str]:
        """The labels of the first sample of `metric` (vLLM publishes its config as `*_info` labels)."""
        response = self.client.get(path)
        response.raise_for_status()
        for match in _SAMPLE.finditer(response.text):
            if match["name"] == metric:
                return dict(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
        return {}


def parse_counters(text: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for match in _SAMPLE.finditer(text):
        try:
            value = float(match["value"])
        except ValueError:
            continue
        totals[match["name"]] = totals.get(match["name"], 0.0) + value
    return totals


def _reply(response: httpx.Response) -> Reply:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = {}
    if not isinstance(body, dict):
        body = {}
    error = ""
    if response.status_code != 200:
        detail = body.get("error", body.get("detail", body.get("message")))
        if isinstance(detail, dict):
            detail = detail.get("message", detail)
        error = str(detail) if detail else response.text[:300]
    return Reply(status=response.status_code, body=body, error=error)
