"""One row per request: what the client saw, timed from the client."""

from __future__ import annotations

from pydantic import BaseModel


class RequestRecord(BaseModel):
    """Times are milliseconds from sending the request; `started_at` is unix seconds.

    `status` is the HTTP status, 0 for a transport error. `ttft_ms` is None when no token arrived.
    `cached_tokens` comes from the usage chunk (vLLM: `--enable-prompt-tokens-details`) or, when the request
    ran alone, from the engine's prefix-cache counters (`cached_tokens_source` says which).
    """

    session: int | None = None
    turn: int | None = None
    started_at: float
    status: int
    error: str | None = None
    ttft_ms: float | None = None
    itl_ms: list[float] = []
    e2e_ms: float
    prompt_tokens: int = 0
    cached_tokens: int | None = None
    completion_tokens: int = 0
    # Which part of a workload the request belongs to: "miss"/"hit"/"warmup" (prefix-cache), a sweep level index.
    phase: str | None = None
    level: int | None = None
    target_prompt_tokens: int | None = None
    cached_tokens_source: str | None = None  # "usage" or "server_counters"

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None

    @property
    def tpot_ms(self) -> float | None:
        """Mean time per output token after the first."""
        if self.ttft_ms is None or self.completion_tokens < 2:
            return None
        return (self.e2e_ms - self.ttft_ms) / (self.completion_tokens - 1)

    @property
    def cached_ratio(self) -> float | None:
        if self.cached_tokens is None or not self.prompt_tokens:
            return None
        return self.cached_tokens / self.prompt_tokens
