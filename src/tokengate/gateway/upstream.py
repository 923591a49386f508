"""The gateway's HTTP/1.1 client for engines: pooled keep-alive connections, parsed by httptools, TLS for https.

Why not aiohttp's client: it was half of the gateway's CPU per proxied request (benchmarks/gateway_overhead.py,
py-spy), for features an engine on a known host does not need (cookies, redirects, proxies, decompression).
This client does one thing: send a request on an idle connection to the replica (or a new one) and hand back the
status, headers and body as it arrives, with back-pressure. Closing a response before its end closes the
connection, which is how vLLM learns that a client went away and stops generating.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlsplit

import httptools

CONNECT_TIMEOUT_SECONDS = 10.0
# How long an engine may stay silent (before its headers, or between two body reads) before the answer is given
# up: a whole answer arrives only when generation ends, so this bounds a hung or stopped engine, not a long answer.
IDLE_TIMEOUT_SECONDS = 600.0
# uvicorn (vLLM's server) closes a keep-alive connection after 5 s idle; reusing one near that age races its close.
IDLE_SECONDS = 3.0
PAUSE_ABOVE_BYTES = 1 << 20  # stop reading from the engine while this much waits for a slow client
RESUME_BELOW_BYTES = 1 << 16


class UpstreamError(Exception):
    """The engine's connection failed or closed before the answer was complete."""


class UpstreamConnectError(UpstreamError):
    """No connection could be made: nothing reached the engine, so another replica may be tried."""


class UpstreamSilentError(UpstreamError):
    """The engine sent nothing for the pool's idle timeout (stopped, hung, or cut off by the network)."""


class Origin:
    """Where one engine listens (http, or https for an external engine behind TLS), and the request head bytes
    that never change for it."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"an engine URL is http://host:port or https://host:port, not {base_url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/")
        lines = [f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self._fixed_headers = ("\r\n".join(lines) + "\r\n").encode("latin-1")

    def request_bytes(self, method: str, path: str, body: bytes | None) -> bytes:
        head = f"{method} {self.prefix}{path} HTTP/1.1\r\n".encode("latin-1") + self._fixed_headers
        if body is None:
            return head + b"\r\n"
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


class UpstreamResponse:
    """One answer, read as it arrives: `read()` for the whole body or `chunks()` for pieces; then `release()`
    (the connection goes back to the pool if the answer was complete) or `close()` (it is dropped)."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.status = 0
        self.headers: dict[str, str] = {}
        self._pieces: deque[bytes] = deque()
        self._buffered = 0
        self._complete = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._released = False

    # --- fed by the connection -------------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self._pieces.append(data)
        self._buffered += len(data)
        if self._buffered > PAUSE_ABOVE_BYTES:
            self._connection.pause()
        self._wake()

    def _finish(self, error: UpstreamError | None = None) -> None:
        if self._complete or self._error is not None:
            return
        if error is None:
            self._complete = True
        else:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # --- read by the relay -----------------------------------------------------------------------------------

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; raises UpstreamError if the connection fails before the end."""
        while True:
            if self._pieces:
                data = b"".join(self._pieces) if len(self._pieces) > 1 else self._pieces[0]
                self._pieces.clear()
                self._buffered = 0
                self._connection.resume()
                yield data
                continue
            if self._complete:
                return
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def read(self) -> bytes:
        return b"".join([piece async for piece in self.chunks()])

    def release(self) -> None:
        """Done with this answer: a complete one frees its connection for the next request, else it is closed."""
        if self._released:
            return
        self._released = True
        if self._complete and not self._pieces:
            self._connection.answer_consumed()
        else:
            self._connection.close()

    def close(self) -> None:
        if not self._released:
            self._released = True
            self._connection.close()


class _Connection(asyncio.Protocol):
    """One keep-alive connection to an engine; answers one request at a time."""

    def __init__(self, pool: UpstreamPool, origin_key: tuple[str, int]) -> None:
        self._pool = pool
        self.origin_key = origin_key
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._response: UpstreamResponse | None = None
        self._headers_ready: asyncio.Future[None] | None = None
        self._received_any = False
        self._paused = False
        self._keep_alive = True
        self.closed = False
        self.idle_since = 0.0
        self._loop = asyncio.get_running_loop()  # made by the loop's create_connection, on the loop's thread
        self._last_heard = 0.0  # loop time of the last byte from the engine, for the silence watchdog
        self._watchdog: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol --------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        self._received_any = True
        self._last_heard = self._loop.time()
        if self._response is None:  # bytes nobody asked for: this connection cannot be trusted any more
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"the engine's answer is not valid HTTP: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_watchdog()
        self._pool.forget(self)
        response = self._response
        if response is not None and not response._complete:
            if response.status and not self._framed(response):  # no length, no chunks: the close ends the body
                response._finish()
            else:
                self._fail(UpstreamError(f"the engine closed the connection{f': {exc}' if exc else ''}"))

    # --- httptools callbacks ---------------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._response is not None
        self._response.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        assert self._response is not None
        self._response.status = self._parser.get_status_code()
        if self._headers_ready is not None and not self._headers_ready.done():
            self._headers_ready.set_result(None)

    def on_body(self, body: bytes) -> None:
        assert self._response is not None
        self._response._feed(body)

    def on_message_complete(self) -> None:
        assert self._response is not None
        self._keep_alive = self._parser.should_keep_alive()
        self._response._finish()

    # --- used by the pool and the response -------------------------------------------------------------------

    async def send(self, request: bytes) -> UpstreamResponse:
        assert self.transport is not None
        response = UpstreamResponse(self)
        self._response = response
        self._received_any = False
        self._headers_ready = self._loop.create_future()
        self._last_heard = self._loop.time()
        self._watchdog = self._loop.call_later(self._pool.idle_timeout, self._check_silence)
        self.transport.write(request)
        try:
            await self._headers_ready
        except BaseException:
            self.close()
            raise
        return response

    def _check_silence(self) -> None:
        """One timer per request, re-armed from the last byte heard (a timer per read cost more than the read).
        A paused connection is waiting on our client, not on the engine: that is not silence."""
        response = self._response
        if response is None or response._complete or self.closed:
            return
        timeout = self._pool.idle_timeout
        quiet = self._loop.time() - self._last_heard
        if quiet < timeout or self._paused:
            self._watchdog = self._loop.call_later(max(timeout - quiet, 0.05), self._check_silence)
            return
        waited = "did not answer within" if not response.status else "sent nothing for"
        self._fail(UpstreamSilentError(f"the engine {waited} {timeout:g} s"))
        self.close()

    def _fail(self, error: UpstreamError) -> None:
        if self._headers_ready is not None and not self._headers_ready.done():
            self._headers_ready.set_exception(error)
        if self._response is not None:
            self._response._finish(error)

    @staticmethod
    def _framed(response: UpstreamResponse) -> bool:
        headers = response.headers
        return "content-length" in headers or "chunked" in headers.get("transfer-encoding", "").lower()

    @property
    def failed_before_answer(self) -> bool:
        return not self._received_any

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def answer_consumed(self) -> None:
        self._stop_watchdog()
        self._response = None
        self._headers_ready = None
        self.resume()
        if self._keep_alive and not self.closed:
            self.idle_since = time.monotonic()
            self._pool.give_back(self)
        else:
            self.close()

    def close(self) -> None:
        self._stop_watchdog()
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()
        self._pool.forget(self)


class UpstreamPool:
    """Idle keep-alive connections per engine, and new ones as needed (no cap: the engines queue requests)."""

    def __init__(
        self,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        tls: ssl.SSLContext | None = None,
        idle_timeout: float = IDLE_TIMEOUT_SECONDS,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self._tls = tls  # for https engines; the system's trusted CAs unless given
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()

    async def request(self, origin: Origin, method: str, path: str, body: bytes | None = None) -> UpstreamResponse:
        """Send one request; returns once the answer's status and headers have arrived.

        Raises UpstreamConnectError when nothing reached the engine, UpstreamError when the connection failed
        after the request was sent. A reused connection that the engine closed while it was idle (a race with
        its keep-alive timeout) is retried once on a new connection: nothing of the answer had arrived."""
        request = origin.request_bytes(method, path, body)
        connection = self._take_idle(origin)
        if connection is not None:
            try:
                return await connection.send(request)
            except UpstreamSilentError:
                raise  # the engine has the request: sending it again would only wait twice
            except UpstreamError:
                if not connection.failed_before_answer:
                    raise
        connection = await self._connect(origin)
        try:
            return await connection.send(request)
        except UpstreamSilentError:
            raise
        except UpstreamError as exc:
            if connection.failed_before_answer:
                raise UpstreamConnectError(str(exc)) from None
            raise

    def _take_idle(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get((origin.host, origin.port))
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < IDLE_SECONDS:
                return connection
            connection.close()
        return None

    async def _connect(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        key = (origin.host, origin.port)
        tls = None
        if origin.tls:
            self._tls = tls = self._tls or ssl.create_default_context()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _transport, connection = await loop.create_connection(
                    lambda: _Connection(self, key), origin.host, origin.port, ssl=tls
                )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError (a certificate refused) is an OSError
            raise UpstreamConnectError(f"cannot connect to {origin.host}:{origin.port}: {exc or 'timed out'}") from None
        self._open.add(connection)
        return connection

    def give_back(self, connection: _Connection) -> None:
        self._idle.setdefault(connection.origin_key, []).append(connection)

    def forget(self, connection: _Connection) -> None:
        self._open.discard(connection)
        idle = self._idle.get(connection.origin_key)
        if idle and connection in idle:
            idle.remove(connection)

    async def close(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing


async def fetch(
    pool: UpstreamPool, origin: Origin, method: str, path: str, body: bytes | None = None
) -> tuple[int, bytes]:
    """A whole small answer (health, tokenize): status and body."""
    response = await pool.request(origin, method, path, body)
    try:
        payload = await response.read()
    finally:
        response.release()
    return response.status, payload


__all__ = [
    "Origin",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamResponse",
    "UpstreamSilentError",
    "fetch",
]
