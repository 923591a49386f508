"""What the gateway adds to a request: throughput and latency through it, as ratios against going direct.

    .venv/bin/python benchmarks/gateway_overhead.py [--requests N] [--json]

One run starts, each in its own process group:

- a stub engine: an OpenAI-compatible `/v1/chat/completions` answering a fixed completion, or a short SSE
  stream, at once (a raw asyncio protocol on uvloop + httptools, so the upstream is never the bottleneck);
- the gateway: the real `create_app` served by uvicorn as `tokengate gateway` serves it (uvloop, httptools,
  no access log), keys required (one real `KeyStore` key) and a real `Ledger` on a temporary file;
- litellm's proxy in front of the same stub, with `--litellm-python` (its own venv) or if `litellm` is importable.

This process is the load generator (raw asyncio + httptools, one keep-alive connection per client). For each
of non-streaming and streaming × 1 and 32 concurrent clients it sends a warm-up, then `--requests` requests,
direct to the stub and through each proxy, in rounds that alternate the targets, and compares req/s, p50/p99
latency, for streams the time to the first content chunk, and each proxy's own CPU time per request.
All processes share this machine's cores. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import re
import signal
import socket
import sqlite3
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any, cast

import httptools
import numpy as np
import orjson
import uvicorn
import uvloop

from tokengate.gateway.app import GatewaySettings, create_app
from tokengate.gateway.auth import Identity
from tokengate.gateway.keys import KeyStore
from tokengate.gateway.ledger import Ledger, utc_day_start
from tokengate.gateway.repairs import repairs_for
from tokengate.gateway.routing import Replica, Router
from tokengate.processes import ProcessGroup

HOST = "127.0.0.1"
MODEL = "bench-model"
FAMILY = "mistral"  # the family with the most repairs, and no vLLM version: every repair runs
CLIENTS = (1, 32)
DEFAULT_REQUESTS = 4000
MAX_REQUESTS = 100_000
ROUNDS = 3  # each cell's requests, split in rounds that alternate the targets
IDLE_RECONNECT_SECONDS = 2.0  # uvicorn closes keep-alive connections idle for 5 s
CELL_SECONDS_PER_REQUEST = 0.02  # the watchdog: a cell taking longer than this per request (+ a minute) fails
TARGET_ADDED_P50_MS = 1.0  # at 1 client
TARGET_RPS_RATIO = 0.40  # at 32 clients
READY_SECONDS = 60.0
STOP_GRACE_SECONDS = 10.0
LITELLM_KEY = "sk-tokengate-bench"
REQUEST_BODY = {
    "model": MODEL,
    "messages": [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "Say something about foxes."},
    ],
    "max_tokens": 16,
    "temperature": 0,
}

# --- the stub engine ------------------------------------------------------------------------------------------

_WORDS = ("The", " quick", " brown", " fox", " jumps", " over", " the", " dog.")
_USAGE = {"prompt_tokens": 24, "completion_tokens": len(_WORDS), "total_tokens": 24 + len(_WORDS)}
_CREATED = 1_700_000_000
_COMPLETION_ID = "chatcmpl-tokengate-bench"


def _http(status: str, content_type: bytes, body: bytes) -> bytes:
    head = b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (status.encode(), content_type, len(body))
    return head + body


def _sse_event(payload: dict[str, Any] | bytes) -> bytes:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return b"data: " + data + b"\n\n"


def _chunked(event: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(event), event)


def _stream_chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": _COMPLETION_ID, "object": "chat.completion.chunk", "created": _CREATED, "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }  # fmt: skip


_COMPLETION = {
    "id": _COMPLETION_ID, "object": "chat.completion", "created": _CREATED, "model": MODEL,
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "".join(_WORDS)}, "logprobs": None,
         "finish_reason": "stop"}
    ],
    "usage": _USAGE,
}  # fmt: skip


class _Replies:
    """Every byte the stub sends, encoded once at startup."""

    completion = _http("200 OK", b"application/json", orjson.dumps(_COMPLETION))
    stream_head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    sse_events = (
        _sse_event(_stream_chunk({"role": "assistant", "content": ""})),
        *(_sse_event(_stream_chunk({"content": word})) for word in _WORDS),
        _sse_event(_stream_chunk({}, "stop")),
    )
    sse_usage = _sse_event(
        {"id": _COMPLETION_ID, "object": "chat.completion.chunk", "created": _CREATED, "model": MODEL,
         "choices": [], "usage": _USAGE}
    )  # fmt: skip
    sse_done = _sse_event(b"[DONE]")
    stream_events = tuple(_chunked(event) for event in sse_events)
    usage_event = _chunked(sse_usage)
    stream_end = _chunked(sse_done) + b"0\r\n\r\n"
    health = _http("200 OK", b"application/json", b'{"status":"ok"}')
    not_found = _http("404 Not Found", b"application/json", b'{"error":{"message":"not found"}}')
    bad_request = _http("400 Bad Request", b"application/json", b'{"error":{"message":"bad request"}}')


class _StubProtocol(asyncio.Protocol):
    """One client connection to the stub: HTTP/1.1 keep-alive, parsed by httptools, answered from `_Replies`."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(_Replies.bad_request)
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        transport = self.transport
        assert transport is not None
        path = self.url.split(b"?", 1)[0]
        if path == b"/health":
            transport.write(_Replies.health)
        elif path == b"/v1/chat/completions" and self.parser.get_method() == b"POST":
            self._chat(transport)
        else:
            transport.write(_Replies.not_found)
        if not self.parser.should_keep_alive():
            transport.close()

    def _chat(self, transport: asyncio.Transport) -> None:
        try:
            request = orjson.loads(b"".join(self.body))
        except orjson.JSONDecodeError:
            transport.write(_Replies.bad_request)
            return
        if not isinstance(request, dict) or not request.get("stream"):
            transport.write(_Replies.completion)
            return
        transport.write(_Replies.stream_head)
        for event in _Replies.stream_events:  # one write per event, as an engine sends them
            transport.write(event)
        if (request.get("stream_options") or {}).get("include_usage"):
            transport.write(_Replies.usage_event)
        transport.write(_Replies.stream_end)


def serve_stub(port_file: Path) -> None:
    async def serve() -> None:
        sock = _listening_socket()
        server = await asyncio.get_running_loop().create_server(_StubProtocol, sock=sock, backlog=1024)
        _announce_port(sock, port_file)
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        async with server:
            await stop.wait()

    uvloop.run(serve())


def asgi_stub_app() -> Any:
    """The same answers from a plain Starlette app: the class of "trivial upstream" the issue's LiteLLM figure
    was measured against (3,491 req/s at 32 clients on 2 cores), and closer to an engine's HTTP layer."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    async def chat(request: Request) -> Response:
        body = await request.json()
        if not body.get("stream"):
            return JSONResponse(_COMPLETION)

        async def stream() -> Any:
            for event in _Replies.sse_events:
                yield event
            if (body.get("stream_options") or {}).get("include_usage"):
                yield _Replies.sse_usage
            yield _Replies.sse_done

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/health", health)])


def serve_asgi_stub(port_file: Path) -> None:
    config = uvicorn.Config(asgi_stub_app(), loop="uvloop", http="httptools", access_log=False, log_level="warning")
    sock = _listening_socket()
    _announce_port(sock, port_file)
    uvicorn.Server(config).run(sockets=[sock])


# --- the gateway, as `tokengate gateway` runs it --------------------------------------------------------------


def serve_gateway(upstream: str, database: Path, port_file: Path) -> None:
    store = KeyStore(database)
    ledger = Ledger(database)

    def lookup(plaintext: str) -> Identity | None:
        record = store.verify(plaintext)
        if record is None:
            return None
        return Identity(
            name=record.name, models=tuple(record.models), tokens_per_day=record.tokens_per_day,
            max_concurrent=record.max_concurrent,
        )  # fmt: skip

    replica = Replica(deployment="stub", base_url=upstream, family=FAMILY, repairs=repairs_for(FAMILY, None))
    settings = GatewaySettings(
        router=Router(routes={MODEL: [replica]}),
        auth_required=True,
        lookup_key=lookup,
        record_usage=ledger.record,
        tokens_used_today=lambda name: ledger.tokens_used_since(name, utc_day_start(time.time())),
        on_shutdown=ledger.close,
    )
    config = uvicorn.Config(
        create_app(settings), loop="uvloop", http="httptools", access_log=False, log_level="warning",
        timeout_graceful_shutdown=5,
    )  # fmt: skip
    sock = _listening_socket()
    _announce_port(sock, port_file)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        ledger.close()


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _announce_port(sock: socket.socket, port_file: Path) -> None:
    partial = port_file.with_suffix(".partial")
    partial.write_text(str(sock.getsockname()[1]))
    partial.replace(port_file)


# --- child processes ------------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    group: ProcessGroup
    port: int
    path: str = "/v1/chat/completions"
    key: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"


def _start_ours(role: str, workdir: Path, *extra: str) -> tuple[ProcessGroup, Path]:
    port_file = workdir / f"{role}.port"
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve", role, "--port-file", str(port_file), *extra]
    return ProcessGroup.start(argv, log_path=workdir / f"{role}.log"), port_file


def _await_port(group: ProcessGroup, port_file: Path, name: str) -> int:
    deadline = time.monotonic() + READY_SECONDS
    while not port_file.exists():
        if not group.is_running():
            raise RuntimeError(f"{name} exited with {group.returncode}:\n{group.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not bind a port in {READY_SECONDS:.0f} s:\n{group.log_tail()}")
        time.sleep(0.05)
    return int(port_file.read_text())


def _await_health(server: Server, path: str) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy
    deadline = time.monotonic() + READY_SECONDS
    while True:
        if not server.group.is_running():
            raise RuntimeError(f"{server.name} exited with {server.group.returncode}:\n{server.group.log_tail()}")
        with contextlib.suppress(OSError), opener.open(server.base_url + path, timeout=2) as response:
            if response.status == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} was not healthy in {READY_SECONDS:.0f} s:\n{server.group.log_tail()}")
        time.sleep(0.1)


def _free_port() -> int:
    """For a child that only takes a port number: bind port 0, read it, let the child bind it right after."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def litellm_python(given: Path | None) -> Path | None:
    """The interpreter that runs litellm's proxy: --litellm-python (its own venv, so its pins never touch
    ours), else this one if litellm is importable here; None when there is none."""
    if given is not None:
        return given
    return Path(sys.executable) if find_spec("litellm") is not None else None


def _start_litellm(python: Path, upstream: str, workdir: Path) -> tuple[ProcessGroup, int]:
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {"model": f"openai/{MODEL}", "api_base": f"{upstream}/v1", "api_key": "unused"},
            }
        ],
        "general_settings": {"master_key": LITELLM_KEY},
    }
    config_path = workdir / "litellm.yaml"
    config_path.write_bytes(orjson.dumps(config))  # JSON is YAML
    port = _free_port()
    argv = [
        str(python), "-c", "from litellm.proxy.proxy_cli import run_server; run_server()",
        "--config", str(config_path), "--host", HOST, "--port", str(port), "--num_workers", "1",
        "--telemetry", "False",
    ]  # fmt: skip
    environment = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    return ProcessGroup.start(argv, log_path=workdir / "litellm.log", env=environment), port


# --- the load generator ---------------------------------------------------------------------------------------

_FIRST_CONTENT = re.compile(rb'"content":\s*"[^"]')


class _Connection(asyncio.Protocol):
    """One keep-alive client connection; `send` times one request to its last byte and its first content."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.status = 0
        self.body = bytearray()
        self.streaming = False
        self.first_content = 0.0
        self.finished = 0.0  # also when the connection was last used
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.finished = time.perf_counter()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _fail(self, exc: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.body += body
        if self.streaming and not self.first_content and _FIRST_CONTENT.search(self.body):
            self.first_content = time.perf_counter()

    def on_message_complete(self) -> None:
        self.finished = time.perf_counter()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def send(self, request: bytes, streaming: bool) -> tuple[float, float, bool]:
        """(seconds to the last byte, seconds to the first content or nan, whether the answer was whole)."""
        assert self.transport is not None
        self.status, self.body, self.streaming, self.first_content = 0, bytearray(), streaming, 0.0
        self.waiter = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        self.transport.write(request)
        await self.waiter
        if streaming:
            whole = self.status == 200 and self.first_content > 0 and self.body.endswith(b"data: [DONE]\n\n")
            return self.finished - started, self.first_content - started, whole
        whole = self.status == 200 and self.body.startswith(b"{") and b'"choices"' in self.body
        return self.finished - started, float("nan"), whole


@dataclass
class Run:
    target: str
    streaming: bool
    clients: int
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    cpu_us_per_request: float | None  # the target's own processes (user + system), not the stub behind a proxy
    upstream: str = ""


def _request_bytes(server: Server, streaming: bool) -> bytes:
    body = orjson.dumps({**REQUEST_BODY, "stream": streaming})
    headers = [
        f"POST {server.path} HTTP/1.1",
        f"Host: {HOST}:{server.port}",
        "Content-Type: application/json",
        "Accept: application/json" if not streaming else "Accept: text/event-stream",
        f"Content-Length: {len(body)}",
    ]
    if server.key:
        headers.append(f"Authorization: Bearer {server.key}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


async def _connect(server: Server) -> _Connection:
    _transport, connection = await asyncio.get_running_loop().create_connection(_Connection, HOST, server.port)
    return connection


async def _refresh(server: Server, pool: list[_Connection]) -> None:
    """Before a timed round: replace connections the server closed or may be about to close for idling."""
    now = time.perf_counter()
    for index, connection in enumerate(pool):
        if connection.lost or now - connection.finished > IDLE_RECONNECT_SECONDS:
            connection.close()
            pool[index] = await _connect(server)


async def _drive(
    server: Server, pool: list[_Connection], streaming: bool, count: int
) -> tuple[list[float], list[float], int]:
    request = _request_bytes(server, streaming)
    latencies: list[float] = []
    ttfts: list[float] = []
    remaining = count
    errors = 0

    async def client(index: int) -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            try:
                latency, ttft, whole = await pool[index].send(request, streaming)
            except (ConnectionError, httptools.HttpParserError):
                errors += 1
                pool[index].close()
                pool[index] = await _connect(server)
                continue
            if whole:
                latencies.append(latency)
                ttfts.append(ttft)
            else:
                errors += 1

    await asyncio.gather(*(client(index) for index in range(len(pool))))
    return latencies, ttfts, errors


@dataclass
class _Tally:
    """One target's rounds in one cell."""

    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    cpu_seconds: float | None = 0.0

    def run(self, server: Server, streaming: bool, clients: int, requests: int) -> Run:
        p50, p99 = _percentiles_ms(self.latencies)
        ttft_p50, ttft_p99 = _percentiles_ms(self.ttfts) if streaming else (None, None)
        cpu = None if self.cpu_seconds is None else round(self.cpu_seconds / requests * 1e6, 1)
        return Run(
            target=server.name, streaming=streaming, clients=clients, requests=requests, errors=self.errors,
            seconds=round(self.seconds, 4), rps=round(requests / self.seconds, 1), p50_ms=p50, p99_ms=p99,
            ttft_p50_ms=ttft_p50, ttft_p99_ms=ttft_p99, cpu_us_per_request=cpu,
        )  # fmt: skip


async def measure_cell(servers: list[Server], streaming: bool, clients: int, requests: int, warmup: int) -> list[Run]:
    """One condition for every target: a warm-up each, then the requests in rounds that alternate the targets,
    so a passing disturbance (another job on the machine) hits every target alike."""
    pools: dict[str, list[_Connection]] = {server.name: [] for server in servers}
    tallies = {server.name: _Tally() for server in servers}
    try:
        for server in servers:
            pools[server.name] += [await _connect(server) for _ in range(clients)]
            await _drive(server, pools[server.name], streaming, warmup)
        shares = [requests // ROUNDS + (1 if i < requests % ROUNDS else 0) for i in range(ROUNDS)]
        for share in shares:
            for server in servers:
                await _measure_round(server, pools[server.name], streaming, share, tallies[server.name])
    finally:
        for connection in (c for pool in pools.values() for c in pool):
            connection.close()
    return [tallies[server.name].run(server, streaming, clients, requests) for server in servers]


async def _measure_round(server: Server, pool: list[_Connection], streaming: bool, count: int, tally: _Tally) -> None:
    await _refresh(server, pool)
    gc.collect()
    gc.disable()  # the load generator's own pauses are not the target's
    try:
        cpu_before = group_cpu_seconds(server.group.pid)
        started = time.perf_counter()
        latencies, ttfts, errors = await _drive(server, pool, streaming, count)
        tally.seconds += time.perf_counter() - started
        cpu_after = group_cpu_seconds(server.group.pid)
    finally:
        gc.enable()
    tally.latencies += latencies
    tally.ttfts += ttfts
    tally.errors += errors
    if cpu_before is None or cpu_after is None or tally.cpu_seconds is None:
        tally.cpu_seconds = None
    else:
        tally.cpu_seconds += cpu_after - cpu_before


def group_cpu_seconds(pgid: int) -> float | None:
    """CPU time (user + system, every thread) of the live processes in a process group; None off Linux."""
    total_ticks = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:  # fields after the command: state, ppid, pgrp, ..., utime (12), stime (13)
            total_ticks += int(fields[11]) + int(fields[12])
    return total_ticks / os.sysconf("SC_CLK_TCK")


def _percentiles_ms(seconds: list[float]) -> tuple[float, float]:
    if not seconds:
        return float("nan"), float("nan")
    p50, p99 = np.percentile(np.asarray(seconds) * 1000, [50, 99])
    return round(float(p50), 3), round(float(p99), 3)


async def measure_all(servers: list[Server], requests: int, warmup: int) -> list[Run]:
    runs = []
    for streaming in (False, True):
        for clients in CLIENTS:
            limit = 60 + CELL_SECONDS_PER_REQUEST * (requests + warmup) * len(servers)
            try:
                async with asyncio.timeout(limit):
                    cell = await measure_cell(servers, streaming, clients, requests, warmup)
            except TimeoutError:
                raise RuntimeError(f"{clients} clients, stream={streaming}: no answer within {limit:.0f} s") from None
            for run in cell:
                runs.append(run)
                mode = "stream" if streaming else "whole"
                errors = f", {run.errors} errors" if run.errors else ""
                print(
                    f"  {run.target:<9} {mode:<6} {clients:>2} clients: {run.rps:>8.0f} req/s, "
                    f"p50 {run.p50_ms:.3f} ms, p99 {run.p99_ms:.3f} ms, "
                    f"{run.cpu_us_per_request} µs CPU/request{errors}",
                    file=sys.stderr,
                )
    return runs


# --- the report -----------------------------------------------------------------------------------------------


@dataclass
class Comparison:
    upstream: str
    proxy: str
    mode: str
    clients: int
    direct_rps: float
    via_rps: float
    rps_ratio: float
    direct_p50_ms: float
    via_p50_ms: float
    added_p50_ms: float
    direct_p99_ms: float
    via_p99_ms: float
    added_p99_ms: float
    added_ttft_p50_ms: float | None
    via_cpu_us_per_request: float | None
    target: str
    target_met: bool | None = field(default=None)


def compare(runs: list[Run], proxies: list[str], upstream: str) -> list[Comparison]:
    by_key = {(run.target, run.streaming, run.clients): run for run in runs}
    rows = []
    for proxy in proxies:
        for streaming in (False, True):
            for clients in CLIENTS:
                direct, via = by_key["direct", streaming, clients], by_key[proxy, streaming, clients]
                ratio = via.rps / direct.rps
                added_p50 = via.p50_ms - direct.p50_ms
                if clients == 1:
                    target, met = f"+p50 <= {TARGET_ADDED_P50_MS:g} ms", added_p50 <= TARGET_ADDED_P50_MS
                else:
                    target, met = f"req/s >= {TARGET_RPS_RATIO:.0%} of direct", ratio >= TARGET_RPS_RATIO
                added_ttft = None
                if via.ttft_p50_ms is not None and direct.ttft_p50_ms is not None:
                    added_ttft = round(via.ttft_p50_ms - direct.ttft_p50_ms, 3)
                rows.append(
                    Comparison(
                        upstream=upstream, proxy=proxy, mode="stream" if streaming else "whole", clients=clients,
                        direct_rps=direct.rps, via_rps=via.rps, rps_ratio=round(ratio, 3),
                        direct_p50_ms=direct.p50_ms, via_p50_ms=via.p50_ms, added_p50_ms=round(added_p50, 3),
                        direct_p99_ms=direct.p99_ms, via_p99_ms=via.p99_ms,
                        added_p99_ms=round(via.p99_ms - direct.p99_ms, 3), added_ttft_p50_ms=added_ttft,
                        via_cpu_us_per_request=via.cpu_us_per_request,
                        target=target, target_met=met,
                    )
                )  # fmt: skip
    return rows


_COLUMNS = (
    ("upstream", "upstream", "<8"), ("proxy", "proxy", "<9"), ("mode", "mode", "<6"), ("clients", "clients", ">7"),
    ("direct_rps", "req/s direct", ">12.0f"), ("via_rps", "req/s via", ">9.0f"), ("rps_ratio", "via/direct", ">10.1%"),
    ("direct_p50_ms", "p50 direct", ">10.3f"), ("via_p50_ms", "p50 via", ">8.3f"), ("added_p50_ms", "+p50", ">7.3f"),
    ("direct_p99_ms", "p99 direct", ">10.3f"), ("via_p99_ms", "p99 via", ">8.3f"), ("added_p99_ms", "+p99", ">7.3f"),
    ("added_ttft_p50_ms", "+TTFT p50", ">9.3f"), ("via_cpu_us_per_request", "CPU µs/req", ">10.0f"),
)  # fmt: skip


def print_table(rows: list[Comparison], header: list[str]) -> None:
    for line in header:
        print(line)
    print()
    print("  ".join(f"{title:{spec[0]}{_width(spec)}}" for _, title, spec in _COLUMNS) + "  target")
    for row in rows:
        cells = []
        for name, _title, spec in _COLUMNS:
            value = getattr(row, name)
            cells.append(f"{'-':{spec[0]}{_width(spec)}}" if value is None else f"{value:{spec}}")
        verdict = "met" if row.target_met else "MISSED"
        print("  ".join(cells) + f"  {row.target}: {verdict}")
    print()
    print(
        "latencies in ms; +x = through the proxy minus direct; TTFT = time to the first content chunk; "
        "CPU µs/req = the proxy process's own CPU time (user + system) per request"
    )


def _width(spec: str) -> str:
    return re.match(r"[<>]?(\d+)", spec).group(1)  # type: ignore[union-attr]


def _ledger_rows(database: Path) -> int:
    with contextlib.closing(sqlite3.connect(database)) as connection:
        (count,) = connection.execute("SELECT COUNT(*) FROM usage").fetchone()
    return int(count)


# --- the run --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the `finally` that stops the children runs for both."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


UPSTREAMS = {
    "raw": "raw asyncio + httptools stub (~30 µs CPU per request): the gateway's own ceiling",
    "asgi": "Starlette-on-uvicorn stub: the class of trivial upstream the issue's LiteLLM figure was measured on",
}


def measure_upstream(
    kind: str, requests: int, warmup: int, workdir: Path, litellm: Path | None
) -> tuple[list[Run], list[str], str, int]:
    """Start one stub of `kind`, the gateway (and litellm) in front of it, measure every cell; stop them all.
    Returns the runs, the proxies measured, litellm's status, and the gateway ledger's row count."""
    database = workdir / "gateway.sqlite3"
    key, _record = KeyStore(database).create(
        "bench", tokens_per_day=10**15, max_concurrent=10_000
    )  # limits set, so the quota checks run
    litellm_status = f"litellm ({litellm}) in front of the same stub" if litellm else "litellm not installed"
    groups: list[ProcessGroup] = []
    try:
        stub_group, stub_port_file = _start_ours(f"{kind}-stub", workdir)
        groups.append(stub_group)
        stub = Server("direct", stub_group, _await_port(stub_group, stub_port_file, "stub"))
        gateway_group, gateway_port_file = _start_ours(
            "gateway", workdir, "--upstream", stub.base_url, "--database", str(database)
        )
        groups.append(gateway_group)
        servers = [stub]
        if litellm is not None:
            litellm_group, litellm_port = _start_litellm(litellm, stub.base_url, workdir)
            groups.append(litellm_group)
        gateway = Server("tokengate", gateway_group, _await_port(gateway_group, gateway_port_file, "gateway"))
        gateway.key = key
        servers.append(gateway)
        _await_health(stub, "/health")
        _await_health(gateway, "/health")
        if litellm is not None:
            litellm_server = Server("litellm", litellm_group, litellm_port, key=LITELLM_KEY)
            try:
                _await_health(litellm_server, "/health/liveliness")
                servers.append(litellm_server)
            except RuntimeError as exc:
                litellm_status = f"failed to start, left out: {str(exc).splitlines()[0]}"
                print(f"litellm {litellm_status}\n{exc}", file=sys.stderr)
                litellm_group.stop(grace_seconds=STOP_GRACE_SECONDS)
        print(f"{kind} upstream: measuring {requests} requests (+{warmup} warm-up) per cell ...", file=sys.stderr)
        runs = uvloop.run(measure_all(servers, requests, warmup))
    finally:
        for group in reversed(groups):
            group.stop(grace_seconds=STOP_GRACE_SECONDS)
    for measured in runs:
        measured.upstream = kind
    proxies = [server.name for server in servers if server.name != "direct"]
    return runs, proxies, litellm_status, _ledger_rows(database)


def run(requests: int, warmup: int, as_json: bool, upstreams: list[str], litellm: Path | None) -> int:
    runs: list[Run] = []
    rows: list[Comparison] = []
    ledger_rows = 0
    litellm_status = ""
    with tempfile.TemporaryDirectory(prefix="tokengate-bench-") as tmp, _terminate_as_interrupt():
        for kind in upstreams:
            workdir = Path(tmp) / kind  # each upstream's own port files, logs and ledger
            workdir.mkdir()
            kind_runs, proxies, litellm_status, kind_rows = measure_upstream(kind, requests, warmup, workdir, litellm)
            runs += kind_runs
            rows += compare(kind_runs, proxies, kind)
            ledger_rows += kind_rows
    expected_rows = sum(r.requests + warmup for r in runs if r.target == "tokengate")
    errors = sum(r.errors for r in runs)
    report = {
        "requests_per_cell": requests,
        "warmup_per_cell": warmup,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "upstreams": {kind: UPSTREAMS[kind] for kind in upstreams},
        "litellm": litellm_status,
        "targets": {"added_p50_ms_at_1_client": TARGET_ADDED_P50_MS, "rps_ratio_at_32_clients": TARGET_RPS_RATIO},
        "ledger_rows": ledger_rows,
        "ledger_rows_expected": expected_rows,
        "errors": errors,
        "runs": [asdict(r) for r in runs],
        "comparisons": [asdict(row) for row in rows],
    }
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        header = [
            f"Tokengate gateway overhead: stub engines on loopback, {os.cpu_count()} CPUs, "
            f"{requests} requests per cell after {warmup} warm-up, Python {platform.python_version()}",
            *(f"upstream {kind}: {UPSTREAMS[kind]}" for kind in upstreams),
            litellm_status,
            f"gateway ledger: {ledger_rows} rows written for {expected_rows} requests sent"
            + (f"; {errors} requests failed" if errors else ""),
        ]
        print_table(rows, header)
    return 1 if errors or ledger_rows != expected_rows else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS, help="measured requests per cell")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--upstream-kind", choices=(*UPSTREAMS, "both"), default="both",
        help="which stub engine to measure against (default: both, one after the other)",
    )  # fmt: skip
    parser.add_argument(
        "--litellm-python", type=Path, help="a Python with litellm[proxy] installed, to measure it in the same run"
    )
    parser.add_argument("--serve", choices=("raw-stub", "asgi-stub", "gateway"), help=argparse.SUPPRESS)
    parser.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--database", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve == "raw-stub":
        serve_stub(args.port_file)
        return 0
    if args.serve == "asgi-stub":
        serve_asgi_stub(args.port_file)
        return 0
    if args.serve == "gateway":
        serve_gateway(args.upstream, args.database, args.port_file)
        return 0
    if not 100 <= args.requests <= MAX_REQUESTS:
        parser.error(f"--requests: from 100 (or the p99 means little) to {MAX_REQUESTS}")
    try:
        upstreams = list(UPSTREAMS) if args.upstream_kind == "both" else [args.upstream_kind]
        litellm = litellm_python(args.litellm_python)
        return run(args.requests, max(100, args.requests // 10), args.json, upstreams, litellm)
    except KeyboardInterrupt:
        print("interrupted; every server stopped", file=sys.stderr)
        return 130
    except RuntimeError as exc:  # a server that would not start or answer; its log tail is in the message
        print(f"gateway_overhead: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
