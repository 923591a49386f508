"""Server-sent events as the gateway relays them: cut from the engine's bytes, sent with no proxy buffering."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

RESPONSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# While the engine is silent (a long prefill sends nothing), a comment line keeps the client's and any proxy's
# idle timers from closing the stream; SSE parsers (the OpenAI and Anthropic SDKs' included) skip comments.
KEEPALIVE = b": keep-alive\n\n"
KEEPALIVE_SECONDS = 15.0


class EventSplitter:
    """Feed it the engine's bytes as they arrive; it returns the events they complete (without the blank line
    that ends each), keeping a partial event for the next feed."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[bytes]:
        *events, self._pending = (self._pending + data).split(b"\n\n")
        return events


class EventStreamResponse(Response):
    """A `text/event-stream` answer sent piece by piece as `events` yields it; the client's disconnect stops it.

    Starlette's StreamingResponse does the same under uvicorn with an anyio task group per response, which was
    a third of the gateway's CPU per streamed request (benchmarks/gateway_overhead.py). Here one plain task
    waits for the disconnect and cancels the relay, whose `finally` closes the engine connection, which makes
    vLLM abort the request. A disconnect is not an error: the server logs nothing.
    """

    media_type = "text/event-stream"

    def __init__(self, events: AsyncGenerator[bytes, None], keepalive_seconds: float = KEEPALIVE_SECONDS) -> None:
        self.events = events
        self.keepalive_seconds = keepalive_seconds
        self.status_code = 200
        self.background = None
        self.init_headers(RESPONSE_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        relay = asyncio.current_task()
        assert relay is not None
        state = {"finished": False, "disconnected": False}

        async def watch_for_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if not state["finished"]:
                state["disconnected"] = True
                relay.cancel()

        watcher = asyncio.create_task(watch_for_disconnect())
        keepalive = _KeepAlive(send, self.keepalive_seconds)
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for piece in self.events:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                keepalive.sent()
            state["finished"] = True
            await keepalive.stop()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not state["disconnected"]:
                raise
            relay.uncancel()
        finally:
            state["finished"] = True
            keepalive.cancel()
            watcher.cancel()
            await self.events.aclose()


class _KeepAlive:
    """One timer per stream, re-armed from the last piece sent; a task only when a comment is due (rarely)."""

    def __init__(self, send: Send, seconds: float) -> None:
        self._send = send
        self._seconds = seconds
        self._loop = asyncio.get_running_loop()
        self._last_sent = self._loop.time()
        self._pending: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(seconds, self._tick)

    def sent(self) -> None:
        self._last_sent = self._loop.time()

    def _tick(self) -> None:
        quiet = self._loop.time() - self._last_sent
        if quiet >= self._seconds:
            body = {"type": "http.response.body", "body": KEEPALIVE, "more_body": True}
            task = self._loop.create_task(self._send(body))  # type: ignore[arg-type]
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            self._last_sent, quiet = self._loop.time(), 0.0
        self._timer = self._loop.call_later(self._seconds - quiet, self._tick)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def stop(self) -> None:
        """No comment may follow the stream's end: cancel the timer and let one already on its way finish."""
        self.cancel()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
