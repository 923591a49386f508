"""What the workloads have in common: their shared settings, the chat request body, the length cap."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tokengate.bench.client import ServerInfo
from tokengate.errors import InvalidInputError

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
Endpoint = Literal["chat", "completions"]


class WorkloadConfig(BaseModel):
    """Settings every workload takes. `salt` None draws a fresh one per run, so no earlier run can hit the cache."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    salt: str | None = None
    metrics_interval_s: float = Field(1.0, ge=0, description="seconds between /metrics polls for peaks; 0: none")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="merged into every request body")


def chat_body(messages: list[dict[str, Any]], max_tokens: int, extra: dict[str, Any]) -> dict[str, Any]:
    return {"messages": messages, "max_tokens": max_tokens, **extra}


def room_for_prompt(info: ServerInfo, max_tokens: int) -> int | None:
    """The longest prompt the engine accepts with `max_tokens` to generate; None when it does not say."""
    if info.max_model_len is None:
        return None
    room = info.max_model_len - max_tokens
    if room <= 0:
        raise InvalidInputError(
            f"max_tokens {max_tokens} leaves no room for a prompt: the engine's max_model_len is {info.max_model_len}"
        )
    return room
