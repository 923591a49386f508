"""What the checks of one target share: the target, its endpoint, and what earlier checks learned."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from tokengate.validate.endpoint import Endpoint
from tokengate.validate.target import Target


@dataclass
class Learned:
    """Facts one check finds and a later one needs."""

    alive: bool = True
    max_model_len: int | None = None
    max_model_len_source: str = ""
    tool_call: dict[str, Any] | None = None  # a tool call the server made, replayed by the round trip
    reasoning_seen: bool | None = None


@dataclass
class Probe:
    target: Target
    endpoint: Endpoint
    transport: httpx.BaseTransport | None = None
    timeout: float = 120.0
    learned: Learned = field(default_factory=Learned)

    def other(self, base_url: str) -> Endpoint:
        """Another server on the same network seam (the engine behind the gateway); close it after use."""
        return Endpoint(base_url, timeout=self.timeout, transport=self.transport)

    def body(self, prompt: str, max_tokens: int, **extra: Any) -> dict[str, Any]:
        """A chat request for this target's model with one user message."""
        return {
            "model": self.target.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            **extra,
        }

    def thinking_off(self) -> dict[str, Any]:
        """The request fields that switch thinking off, for families whose template takes them (else none:
        the mistral tokenizer refuses `chat_template_kwargs`)."""
        return {"chat_template_kwargs": {"enable_thinking": False}} if self.target.takes_thinking_switch else {}
