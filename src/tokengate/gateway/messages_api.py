"""`POST /v1/messages` and `/v1/messages/count_tokens`: Anthropic's API over the engines' chat completions.

The request goes through the same admission (keys, quotas), routing, family repairs, ledger and metrics as an
OpenAI request; only the two edges differ (see `anthropic` and `anthropic_stream`). Every error is
Anthropic-shaped. A prompt longer than the deployment's context gets Anthropic's own wording, counted with the
engine's `/tokenize`, so agents such as Claude Code compact the conversation instead of failing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tokengate.gateway.anthropic import (
    TranslationError,
    chat_to_message,
    error_body,
    is_context_length_error,
    messages_to_chat,
    thinking_switch,
    upstream_error_message,
)
from tokengate.gateway.anthropic_stream import MessageStream, error_event, parse_chunk
from tokengate.gateway.prefix_cache import preserve_prefix
from tokengate.gateway.repairs import apply_repairs
from tokengate.gateway.routing import Replica
from tokengate.gateway.sse import EventSplitter, EventStreamResponse
from tokengate.gateway.upstream import UpstreamError, UpstreamResponse, fetch

if TYPE_CHECKING:
    from tokengate.gateway.app import Gateway, _Call

CHAT_PATH = "/v1/chat/completions"
TOKENIZE_TIMEOUT_SECONDS = 30.0


def anthropic_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(status, message), status_code=status, media_type="application/json", headers=headers)


def as_anthropic(response: Response) -> Response:
    """An OpenAI-shaped error from the shared admission steps, re-shaped; Retry-After is kept."""
    message = upstream_error_message(bytes(response.body))
    retry_after = response.headers.get("retry-after")
    return anthropic_error(response.status_code, message, {"Retry-After": retry_after} if retry_after else None)


async def messages(gateway: Gateway, request: Request) -> Response:
    started = time.perf_counter()
    admitted = await gateway.admit(request)
    if isinstance(admitted, Response):
        return as_anthropic(admitted)
    body, model, identity = admitted
    try:
        body = _preserved(gateway, body, model)
        stream = bool(body.get("stream"))
        chat = messages_to_chat(body, stream=stream)
    except TranslationError as exc:
        gateway.in_flight[identity.name] -= 1
        return anthropic_error(400, str(exc))
    except BaseException:  # the app answers a 500; the key's slot must not stay taken
        gateway.in_flight[identity.name] -= 1
        raise

    def prepare(replica: Replica) -> tuple[dict[str, Any], bool]:
        outgoing = gateway.repair({**chat, **thinking_switch(body, replica.family)}, replica)
        return {**outgoing, "model": replica.engine_model(model)}, True

    opened = await gateway.open_upstream(CHAT_PATH, prepare, model, identity, started)
    if isinstance(opened, Response):
        return as_anthropic(opened)
    call, upstream, outgoing, _ = opened
    stop_sequences = body.get("stop_sequences") or None
    if upstream.status != 200:
        return await _relay_error(gateway, call, upstream, outgoing)
    if stream:
        events = _relay_stream(call, upstream, MessageStream(model, stop_sequences))
        return EventStreamResponse(events, gateway.settings.stream_keepalive_seconds)
    return await _relay_whole(call, upstream, model, stop_sequences)


async def _relay_whole(
    call: _Call, upstream: UpstreamResponse, model: str, stop_sequences: list[str] | None
) -> Response:
    try:
        payload = await upstream.read()
    except UpstreamError as exc:
        call.finish(502)
        return anthropic_error(502, f"engine {call.replica.deployment} failed mid-answer: {exc}")
    finally:
        upstream.release()
    try:
        completion = orjson.loads(payload)
    except orjson.JSONDecodeError:
        call.finish(502)
        return anthropic_error(502, f"engine {call.replica.deployment} answered something that is not JSON")
    call.usage = completion.get("usage") or {}
    call.finish(200)
    answer = chat_to_message(completion, model=model, stop_sequences=stop_sequences)
    return Response(orjson.dumps(answer), media_type="application/json")


async def count_tokens(gateway: Gateway, request: Request) -> Response:
    """Counted by the engine that would serve the request, on the prompt exactly as it would be rendered."""
    admitted = await gateway.admit(request, check_quota=False)
    if isinstance(admitted, Response):
        return as_anthropic(admitted)
    body, model, _identity = admitted
    try:
        chat = messages_to_chat(_preserved(gateway, body, model, count=False))
    except TranslationError as exc:
        return anthropic_error(400, str(exc))
    replica = gateway.settings.router.choose(model)
    if replica is None:
        return anthropic_error(503, f"no healthy engine serves {model!r} right now", {"Retry-After": "2"})
    repaired, _ = apply_repairs({**chat, **thinking_switch(body, replica.family)}, replica.repairs)  # not counted:
    counted = await _tokenize(gateway, replica, repaired, model)  # nothing is sent for an answer
    if isinstance(counted, str):
        return anthropic_error(502, counted)
    return Response(orjson.dumps({"input_tokens": counted[0]}), media_type="application/json")


def _preserved(gateway: Gateway, body: dict[str, Any], model: str, *, count: bool = True) -> dict[str, Any]:
    if not gateway.settings.router.preserves_prefix(model):
        return body
    preserved, removed = preserve_prefix(body)
    for kind, removed_count in removed.items() if count else ():
        gateway.metrics.volatile_removed.labels(kind).inc(removed_count)
    return preserved


async def _tokenize(
    gateway: Gateway, replica: Replica, chat: dict[str, Any], model: str
) -> tuple[int, int | None] | str:
    """(prompt tokens, the engine's max_model_len) from vLLM's /tokenize, or why it could not be counted."""
    request = {
        "model": replica.engine_model(model),
        "messages": chat["messages"],
        "add_generation_prompt": True,
        **{name: chat[name] for name in ("tools", "chat_template_kwargs") if name in chat},
    }
    try:
        async with asyncio.timeout(TOKENIZE_TIMEOUT_SECONDS):
            status, payload = await fetch(gateway.pool, replica.origin, "POST", "/tokenize", orjson.dumps(request))
    except (TimeoutError, UpstreamError) as exc:
        return f"engine {replica.deployment} could not count tokens: {type(exc).__name__}"
    if status != 200:
        return f"engine {replica.deployment} could not count tokens: {upstream_error_message(payload)}"
    document = orjson.loads(payload)
    return int(document["count"]), document.get("max_model_len")


async def _relay_error(gateway: Gateway, call: _Call, upstream: UpstreamResponse, outgoing: dict[str, Any]) -> Response:
    try:
        payload = await upstream.read()
    except UpstreamError:
        payload = b""
    finally:
        upstream.release()
    status = upstream.status
    call.finish(status)
    message = upstream_error_message(payload) or f"engine answered {status}"
    if status == 400 and is_context_length_error(message):
        message = await _context_message(gateway, call.replica, outgoing, message)
    return anthropic_error(status, message)


async def _context_message(gateway: Gateway, replica: Replica, outgoing: dict[str, Any], fallback: str) -> str:
    """Anthropic's wording for an over-long request, which agents recognise: "prompt is too long" when the prompt
    alone does not fit (they compact), the input + max_tokens form when only the answer's room is short."""
    counted = await _tokenize(gateway, replica, outgoing, outgoing["model"])
    if isinstance(counted, str) or counted[1] is None:
        return fallback
    tokens, limit = counted
    if tokens >= limit:
        return f"prompt is too long: {tokens} tokens > {limit} maximum"
    max_tokens = outgoing.get("max_tokens") or 0
    return (
        f"input length and `max_tokens` exceed context limit: {tokens} + {max_tokens} > {limit}, "
        "decrease input length or `max_tokens` and try again"
    )


async def _relay_stream(call: _Call, upstream: UpstreamResponse, translator: MessageStream) -> AsyncIterator[bytes]:
    status = 200
    splitter = EventSplitter()
    deployment = call.replica.deployment
    try:
        async for data in upstream.chunks():
            pieces = []  # the events of one read go out in one write
            for event in splitter.feed(data):
                translated, failed = _translate(event, translator)
                if call.first_token_at is None and b"content_block_delta" in translated:
                    call.first_token_at = time.perf_counter()
                pieces.append(translated)
                if failed:
                    status = 502
                    yield b"".join(pieces)
                    return
            if any(pieces):
                yield b"".join(pieces)
        if not translator.finished:
            status = 502
            yield error_event(502, f"engine {deployment} ended the stream before it was complete")
    except (TimeoutError, UpstreamError) as exc:
        status = 502
        call.gateway.metrics.upstream_errors.labels(deployment, "stream").inc()
        yield error_event(502, f"engine {deployment} failed mid-stream: {exc or type(exc).__name__}")
    except BaseException:
        status = 499  # the client went away (cancelled); closing the upstream below cancels the engine's work
        raise
    finally:
        upstream.release()  # reused when the stream ended; closed (the engine stops) if not
        call.usage = translator.usage
        call.finish(status)


def _translate(event: bytes, translator: MessageStream) -> tuple[bytes, bool]:
    """The Anthropic events for one engine SSE event, and whether the engine reported a failure in it."""
    if event.startswith(b"data: [DONE]"):
        return translator.end(), False
    chunk = parse_chunk(event)
    if chunk is None:
        return b"", False
    if chunk.get("error"):  # vLLM reports a failure after the stream began as a data event
        return error_event(502, upstream_error_message(event[6:])), True
    return translator.feed(chunk), False
