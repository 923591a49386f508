"""A streamed chat completion, reassembled from its server-sent events (pure: no I/O)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field


class ToolCall(BaseModel):
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class StreamedChat(BaseModel):
    """Everything a client sees in one stream, with the times it arrived (ms from the request)."""

    role: str | None = None
    content: str = ""
    reasoning: str = ""
    content_deltas: int = 0
    reasoning_deltas: int = 0
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    done: bool = False
    error: str | None = None
    time_to_first_token_ms: float | None = None
    total_ms: float = 0.0

    @property
    def text(self) -> str:
        return self.content + self.reasoning


def assemble(events: Iterable[tuple[float, str]]) -> StreamedChat:
    """Build a `StreamedChat` from (ms since the request, `data:` payload) pairs in arrival order."""
    stream = StreamedChat()
    calls: dict[int, ToolCall] = {}
    for at_ms, payload in events:
        stream.total_ms = at_ms
        if payload == "[DONE]":
            stream.done = True
            continue
        chunk = json.loads(payload)
        if "error" in chunk:
            stream.error = str((chunk["error"] or {}).get("message", chunk["error"]))
            continue
        stream.usage = chunk.get("usage") or stream.usage
        choices = chunk.get("choices") or []
        if choices and stream.time_to_first_token_ms is None:
            # vLLM sends its first chunk (the role) with the first token, whose text may be empty (a partial UTF-8
            # byte, a special token): the first chunk carrying a choice is the first token, as bench counts it.
            stream.time_to_first_token_ms = at_ms
        for choice in choices:
            _add_delta(stream, calls, choice.get("delta") or {})
            stream.finish_reason = choice.get("finish_reason") or stream.finish_reason
    stream.tool_calls = [calls[index] for index in sorted(calls)]
    return stream


def _add_delta(stream: StreamedChat, calls: dict[int, ToolCall], delta: dict[str, Any]) -> None:
    """Fold one delta into the stream."""
    stream.role = stream.role or delta.get("role")
    content = delta.get("content") or ""
    reasoning = delta.get("reasoning") or delta.get("reasoning_content") or ""
    stream.content += content
    stream.reasoning += reasoning
    stream.content_deltas += bool(content)
    stream.reasoning_deltas += bool(reasoning)
    pieces = delta.get("tool_calls") or []
    for position, piece in enumerate(pieces):
        call = calls.setdefault(int(piece.get("index", position)), ToolCall())
        function = piece.get("function") or {}
        call.id = call.id or piece.get("id")
        call.name = call.name or function.get("name")
        call.arguments += function.get("arguments") or ""
