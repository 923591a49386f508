"""A chat-completions stream (OpenAI chunks) turned into a Messages stream (Anthropic events), chunk by chunk.

Event order, as Anthropic's SDKs expect it: `message_start`, `ping`, then for each content block
`content_block_start`, its deltas (`thinking_delta`, `text_delta` or `input_json_delta`) and
`content_block_stop`, then `message_delta` (stop reason, usage) and `message_stop`.
"""

from __future__ import annotations

from typing import Any

import orjson

from tokengate.gateway.anthropic import (
    Body,
    client_tool_id,
    error_type,
    message_id,
    message_usage,
    stop_reason,
)


def sse_event(kind: str, data: Body) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def error_event(status: int, message: str) -> bytes:
    return sse_event("error", {"type": "error", "error": {"type": error_type(status), "message": message}})


class MessageStream:
    """Feed it each chunk of the engine's stream; it returns the Anthropic events that chunk completes."""

    def __init__(self, model: str, stop_sequences: list[str] | None = None) -> None:
        self.model = model
        self.stop_sequences = stop_sequences
        self.started = False
        self.block_index = -1
        self.open_block: str | None = None  # "thinking", "text" or "tool_use"
        self.tool_blocks: dict[int, int] = {}  # the engine's tool-call index → our block index
        self.saw_tool_call = False
        self.finish: Body = {}
        self.usage: Body = {}
        self.finished = False

    def feed(self, chunk: Body) -> bytes:
        events = bytearray()
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        if not self.started:
            events += self._start(chunk)
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning") or delta.get("reasoning_content")
            if reasoning:
                events += self._delta("thinking", {"type": "thinking_delta", "thinking": reasoning})
            if delta.get("content"):
                events += self._delta("text", {"type": "text_delta", "text": delta["content"]})
            for call in delta.get("tool_calls") or []:
                events += self._tool_call(call)
            if choice.get("finish_reason"):
                self.finish = choice
        return bytes(events)

    def end(self) -> bytes:
        """After the engine's `[DONE]`: close the open block, say why the message stopped, and with what usage."""
        events = bytearray()
        if not self.started:
            events += self._start({})
        events += self._close_block()
        reason, sequence = stop_reason(self.finish, self.saw_tool_call, self.stop_sequences)
        usage = message_usage(self.usage)
        events += sse_event(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": reason or "end_turn", "stop_sequence": sequence},
             "usage": usage},
        )  # fmt: skip
        events += sse_event("message_stop", {"type": "message_stop"})
        self.finished = True
        return bytes(events)

    def _start(self, chunk: Body) -> bytes:
        self.started = True
        usage = message_usage(self.usage)
        usage["output_tokens"] = 0
        message = {
            "id": message_id(chunk), "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": usage,
        }  # fmt: skip
        return sse_event("message_start", {"type": "message_start", "message": message}) + sse_event(
            "ping", {"type": "ping"}
        )

    def _delta(self, kind: str, delta: Body) -> bytes:
        events = b""
        if self.open_block != kind:
            events += self._close_block()
            empty: Body = {"type": "thinking", "thinking": "", "signature": ""} if kind == "thinking" else {
                "type": "text", "text": ""
            }  # fmt: skip
            events += self._open(kind, empty)
        return events + sse_event(
            "content_block_delta", {"type": "content_block_delta", "index": self.block_index, "delta": delta}
        )

    def _tool_call(self, call: Body) -> bytes:
        self.saw_tool_call = True
        events = b""
        engine_index = int(call.get("index") or 0)
        function = call.get("function") or {}
        if engine_index not in self.tool_blocks:
            events += self._close_block()
            block = {
                "type": "tool_use", "id": client_tool_id(str(call.get("id") or f"call{engine_index}")),
                "name": function.get("name") or "", "input": {},
            }  # fmt: skip
            events += self._open("tool_use", block)
            self.tool_blocks[engine_index] = self.block_index
        arguments = function.get("arguments")
        if arguments:
            delta = {"type": "input_json_delta", "partial_json": arguments}
            events += sse_event(
                "content_block_delta",
                {"type": "content_block_delta", "index": self.tool_blocks[engine_index], "delta": delta},
            )
        return events

    def _open(self, kind: str, block: Body) -> bytes:
        self.block_index += 1
        self.open_block = kind
        return sse_event(
            "content_block_start", {"type": "content_block_start", "index": self.block_index, "content_block": block}
        )

    def _close_block(self) -> bytes:
        if self.open_block is None:
            return b""
        self.open_block = None
        return sse_event("content_block_stop", {"type": "content_block_stop", "index": self.block_index})


def parse_chunk(event: bytes) -> Any:
    """The JSON of one `data: {...}` SSE event, or None for anything else ([DONE], comments, bad JSON)."""
    if not event.startswith(b"data: {"):
        return None
    try:
        return orjson.loads(event[6:])
    except orjson.JSONDecodeError:
        return None
