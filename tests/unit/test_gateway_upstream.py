"""The gateway's engine client against a scripted HTTP/1.1 server: reuse, framing, failures, back-pressure."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

import pytest
import trustme

from tokengate.gateway.upstream import (
    PAUSE_ABOVE_BYTES,
    Origin,
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
    UpstreamSilentError,
    fetch,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A loopback server whose connections are handled by a test's script; counts connections and requests."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    @property
    def origin(self) -> Origin:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return Origin(f"http://127.0.0.1:{port}", {"Authorization": "Bearer engine-key"})


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    return head + await reader.readexactly(length)


def answer(body: bytes, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        status.encode(),
        len(body),
        extra,
        body,
    )


def run(coroutine: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 10))  # type: ignore[arg-type]


def keep_alive_server(body: bytes = b'{"ok":true}') -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await read_request(reader)
            server_requests.append(request)
            writer.write(answer(body))
            await writer.drain()

    server_requests: list[bytes] = []
    handle.requests = server_requests  # type: ignore[attr-defined]
    return handle


def test_requests_reuse_one_keep_alive_connection_and_carry_the_engine_headers() -> None:
    async def main() -> None:
        handler = keep_alive_server()
        server = Server(handler)
        server.server = await asyncio.start_server(server._serve, "127.0.0.1", 0)
        pool = UpstreamPool()
        for _ in range(3):
            status, payload = await fetch(pool, server.origin, "POST", "/v1/chat/completions", b'{"a":1}')
            assert (status, payload) == (200, b'{"ok":true}')
        assert server.connections == 1
        sent = handler.requests  # type: ignore[attr-defined]
        assert len(sent) == 3
        assert sent[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
        assert b"Authorization: Bearer engine-key\r\n" in sent[0] and sent[0].endswith(b'\r\n\r\n{"a":1}')
        await pool.close()
        server.server.close()

    run(main())


def test_a_chunked_stream_arrives_piece_by_piece_and_the_connection_is_reused() -> None:
    pieces = [b"data: one\n\n", b"data: two\n\n", b"data: [DONE]\n\n"]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            for piece in pieces:
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
                await asyncio.sleep(0.01)
            writer.write(b"0\r\n\r\n")

    async def main() -> None:
        server = Server(handle)
        server.server = await asyncio.start_server(server._serve, "127.0.0.1", 0)
        pool = UpstreamPool()
        for _ in range(2):
            response = await pool.request(server.origin, "POST", "/v1/chat/completions", b"{}")
            assert response.headers["content-type"] == "text/event-stream"
            received = [chunk async for chunk in response.chunks()]
            response.release()
            assert b"".join(received) == b"".join(pieces)
            assert len(received) >= 2  # delivered as it came, not buffered to the end
        assert server.connections == 1
        await pool.close()
        server.server.close()

    run(main())


def test_closing_a_stream_early_closes_its_connection_so_the_engine_stops() -> None:
    closed = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await reader.read()  # returns b"" when the client closes
        closed.set()

    async def main() -> None:
        server = Server(handle)
        server.server = await asyncio.start_server(server._serve, "127.0.0.1", 0)
        pool = UpstreamPool()
        response = await pool.request(server.origin, "POST", "/v1/chat/completions", b"{}")
        async for chunk in response.chunks():
            assert chunk == b"first"
            break
        response.close()
        await asyncio.wait_for(closed.wait(), 5)
        await pool.close()
        server.server.close()

    run(main())


def test_a_refused_connection_is_a_connect_error() -> None:
    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        with pytest.raises(UpstreamConnectError, match="cannot connect"):
            await UpstreamPool().request(Origin(f"http://127.0.0.1:{port}"), "GET", "/health")

    run(main())


def test_an_engine_that_dies_mid_body_raises_instead_of_ending_quietly() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        writer.transport.abort()

    async def main() -> None:
        server = Server(handle)
        server.server = await asyncio.start_server(server._serve, "127.0.0.1", 0)
        response = await UpstreamPool().request(server.origin, "POST", "/v1/chat/completions", b"{}")
        with pytest.raises(UpstreamError, match="closed the connection"):
            async for _ in response.chunks():
                pass
        server.server.close()

    run(main())


def test_an_engine_that_closes_before_answering_a_new_connection_is_not_retried() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.transport.abort()

    async def main() -> None:
        server = Server(handle)
        server.server = await asyncio.start_server(server._serve, "127.0.0.1", 0)
        with pytest.raises(UpstreamConnectError):
            await UpstreamPool().request(server.origin, "POST", "/v1/chat/completions", b"{}")
        assert server.connections == 1
        server.server.close()

    run(main())


def test_an_idle_connection_the_engine_closed_is_replaced_without_failing_the_request() -> None:
    """The keep-alive race: the engine closes an idle connection as a request is written on it."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"{}"))
        await writer.drain()
        if server.connections == 1:
            await read_request(reader)  # the second request arrives on the old connection...
            writer.transport.abort()  # ...and the engine had decided to close it: no answer
            return
        while True:
            await read_request(reader)
            writer.write(answer(b"{}"))
            await writer.drain()

    async def main() -> None:
        nonlocal server
        server = Server(handle)
        server.server = await asyncio.start_server(server._serve, "127.0.0.1", 0)
        pool = UpstreamPool()
        assert (await fetch(pool, server.origin, "POST", "/x", b"{}"))[0] == 200
        assert (await fetch(pool, server.origin, "POST", "/x", b"{}"))[0] == 200
        assert server.connections == 2
        await pool.close()
        server.server.close()

    server: Server
    run(main())


def test_a_slow_reader_pauses_the_engine_connection_until_it_catches_up() -> None:
    body = b"x" * (4 * PAUSE_ABOVE_BYTES)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(body))
        await writer.drain()

    async def main() -> None:
        server = Server(handle)
        server.server = await asyncio.start_server(server._serve, "127.0.0.1", 0)
        response = await UpstreamPool().request(server.origin, "GET", "/big")
        for _ in range(100):  # the engine writes everything it can; the client reads nothing yet
            await asyncio.sleep(0.05)
            if response._buffered > PAUSE_ABOVE_BYTES:
                break
        await asyncio.sleep(0.2)  # had reading not paused, more would arrive now
        buffered = response._buffered
        assert PAUSE_ABOVE_BYTES < buffered < len(body)  # reading stopped just past the limit, not at the end
        assert b"".join([chunk async for chunk in response.chunks()]) == body
        server.server.close()

    run(main())


def test_an_origin_is_http_or_https() -> None:
    assert (Origin("https://engine").port, Origin("https://engine").tls) == (443, True)
    assert (Origin("http://engine/v1/").port, Origin("http://engine/v1/").prefix) == (80, "/v1")
    with pytest.raises(ValueError, match="http://host:port or https://host:port"):
        Origin("ftp://engine:8000")


def test_an_https_engine_is_reached_over_tls_and_its_certificate_is_checked() -> None:
    authority = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_tls)
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)

    async def main() -> None:
        server = Server(keep_alive_server())
        server.server = await asyncio.start_server(server._serve, "127.0.0.1", 0, ssl=server_tls)
        port = server.server.sockets[0].getsockname()[1]
        origin = Origin(f"https://127.0.0.1:{port}")
        assert await fetch(UpstreamPool(tls=trusting), origin, "GET", "/health") == (200, b'{"ok":true}')
        with pytest.raises(UpstreamConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await UpstreamPool().request(origin, "GET", "/health")  # the system's CAs do not know this one
        server.server.close()

    run(main())


def test_an_engine_that_goes_silent_is_given_up_after_the_idle_timeout_before_or_within_its_answer() -> None:
    """Before: the client waited on a hung engine (SIGSTOP, a network cut) for ever; only a closed socket ended it."""
    stalled = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        if b"/stream" in request:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()
        await reader.read()  # then nothing more, until the client gives up and closes
        stalled.set()

    async def main() -> None:
        server = Server(handle)
        server.server = await asyncio.start_server(server._serve, "127.0.0.1", 0)
        pool = UpstreamPool(idle_timeout=0.2)
        with pytest.raises(UpstreamSilentError, match=r"did not answer within 0\.2 s"):
            await pool.request(server.origin, "POST", "/v1/chat/completions", b"{}")
        await asyncio.wait_for(stalled.wait(), 5)  # the connection was closed, so the engine can stop
        stalled.clear()
        response = await pool.request(server.origin, "POST", "/stream", b"{}")
        received = []
        with pytest.raises(UpstreamSilentError, match=r"sent nothing for 0\.2 s"):
            async for chunk in response.chunks():
                received.append(chunk)
        assert received == [b"first"]
        await asyncio.wait_for(stalled.wait(), 5)
        assert server.connections == 2  # a silent engine's request is not sent again
        await pool.close()
        server.server.close()

    run(main())
