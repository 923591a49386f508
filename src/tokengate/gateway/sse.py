"""Server-sent events as the gateway relays them: cut from the engine's bytes, sent with no proxy buffering."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

RESPONSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


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

    def __init__(self, events: AsyncGenerator[bytes, None]) -> None:
        self.events = events
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
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for piece in self.events:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            state["finished"] = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not state["disconnected"]:
                raise
            relay.uncancel()
        finally:
            state["finished"] = True
            watcher.cancel()
            await self.events.aclose()
