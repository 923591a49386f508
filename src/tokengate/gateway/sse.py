"""Server-sent events as the gateway relays them: cut from the engine's bytes, sent with no proxy buffering."""

from __future__ import annotations

RESPONSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EventSplitter:
    """Feed it the engine's bytes as they arrive; it returns the events they complete (without the blank line
    that ends each), keeping a partial event for the next feed."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[bytes]:
        *events, self._pending = (self._pending + data).split(b"\n\n")
        return events
