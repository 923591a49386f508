"""The harness every workload runs in: one event loop, the server's facts, metric scrapes around the
measurement, a stop flag and Ctrl-C that end the run cleanly with what was measured.

A workload is three steps: `prepare` (calibrate prompts, warm up: not measured, before the first scrape),
`measure` (the requests; cancelled when `stop` is set or on Ctrl-C), `finish` (its own summaries, from the
records: pure). Callers stay synchronous: `execute` runs the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from tokengate import __version__
from tokengate.bench.aggregate import Slo, latency_summaries, measured_window, throughput_scalars
from tokengate.bench.client import BenchClient, ServerInfo, Streamed
from tokengate.bench.prompts import PromptFactory, calibrate
from tokengate.bench.records import RequestRecord
from tokengate.bench.run import BenchRun
from tokengate.bench.server_metrics import EngineMetrics, ServerDeltas, server_deltas
from tokengate.bench.target import BenchTarget
from tokengate.bench.workload import WorkloadConfig

Progress = Callable[[int, int], None]
STOP_POLL_SECONDS = 0.05
COUNTER_SETTLE_SECONDS = 2.0  # the longest wait for the engine to publish a finished request's counters


class MetricsWatcher:
    """Scrapes the engine before, every `interval_s` during, and after a measured stretch."""

    def __init__(self, client: BenchClient, interval_s: float = 1.0) -> None:
        self._client = client
        self._interval_s = interval_s
        self._before: EngineMetrics | None = None
        self._during: list[EngineMetrics] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> EngineMetrics | None:
        self._before = await self._client.metrics()
        self._during = []
        if self._before is not None and self._interval_s > 0:
            self._task = asyncio.create_task(self._poll())
        return self._before

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            scraped = await self._client.metrics()
            if scraped is not None:
                self._during.append(scraped)

    async def finish(self) -> ServerDeltas | None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._before is None:
            return None
        after = await self._client.metrics()
        return server_deltas(self._before, after, self._during) if after is not None else None


@dataclass
class RunContext:
    """What a workload's steps share: the client, the server's facts, prompt texts, the records so far."""

    client: BenchClient
    info: ServerInfo
    prompts: PromptFactory
    total: int
    on_progress: Progress | None = None
    records: list[RequestRecord] = field(default_factory=list)
    effective: dict[str, Any] = field(default_factory=dict)  # settings the run resolved (lengths capped, salt)
    attribute_cached_tokens: bool = False
    engine_metrics: EngineMetrics | None = None
    _in_flight: int = 0
    _sent: int = 0

    def add(self, record: RequestRecord) -> None:
        self.records.append(record)
        if self.on_progress is not None:
            self.on_progress(len(self.records), self.total)

    async def send(self, path: str, body: dict[str, Any], *, record: bool = True, **labels: Any) -> Streamed:
        """Stream one request and keep its record. When the engine does not report cached tokens and
        `attribute_cached_tokens` is on, a request that ran alone gets them from the prefix-cache counters
        (scraped before it started and after it ended, outside its timing)."""
        self._sent += 1
        ticket = self._sent
        before = await self.client.metrics() if self.attribute_cached_tokens and self._in_flight == 0 else None
        self._in_flight += 1
        try:
            streamed = await self.client.stream(path, body, **labels)
        finally:
            self._in_flight -= 1
        if before is not None and ticket == self._sent and streamed.record.cached_tokens is None:
            await self._attribute(streamed.record, before)
        if record:
            self.add(streamed.record)
        return streamed

    async def _attribute(self, record: RequestRecord, before: EngineMetrics) -> None:
        after = await self._metrics_including(record, before)
        if after is None or before.prefix_cache_hits is None or after.prefix_cache_hits is None:
            return
        record.cached_tokens = round(after.prefix_cache_hits - before.prefix_cache_hits)
        record.cached_tokens_source = "server_counters"

    async def _metrics_including(self, record: RequestRecord, before: EngineMetrics) -> EngineMetrics | None:
        """The engine's counters once they include this request: vLLM publishes them a moment after the answer
        ends, and reading too early puts a request's cache hits on the next one. Its generated tokens mark it."""
        deadline = time.monotonic() + COUNTER_SETTLE_SECONDS
        while True:
            after = await self.client.metrics()
            if after is None or before.generation_tokens is None or after.generation_tokens is None:
                return after
            if after.generation_tokens >= before.generation_tokens + record.completion_tokens:
                return after
            if time.monotonic() > deadline:
                return after
            await asyncio.sleep(0.02)

    async def count_chat(self, messages: list[dict[str, Any]]) -> int | None:
        return await self.client.tokenize(messages=messages) if self.info.tokenize else None

    async def count_text(self, text: str) -> int | None:
        return await self.client.tokenize(prompt=text) if self.info.tokenize else None


class Workload(Protocol):
    name: str
    slo: Slo | None
    metrics_interval_s: float
    salt: str

    @property
    def config(self) -> WorkloadConfig: ...

    def total_requests(self) -> int: ...
    async def prepare(self, ctx: RunContext) -> None: ...
    async def measure(self, ctx: RunContext) -> None: ...
    def finish(self, run: BenchRun) -> BenchRun: ...


@dataclass
class _State:
    ctx: RunContext | None = None
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    interrupted: bool = False
    server: ServerDeltas | None = None


def execute(
    workload: Workload, target: BenchTarget, *, on_progress: Progress | None = None, stop: threading.Event | None = None
) -> BenchRun:
    """Run a workload to the end, or until `stop` is set or Ctrl-C: then `interrupted=True` and the run holds
    every request that finished."""
    state = _State()
    try:
        asyncio.run(_main(workload, target, state, on_progress, stop))
    except KeyboardInterrupt:
        state.interrupted = True
    return _assemble(workload, target, state)


async def _main(
    workload: Workload, target: BenchTarget, state: _State, on_progress: Progress | None, stop: threading.Event | None
) -> None:
    async with BenchClient(target) as client:
        info = await client.server_info()
        prompts = PromptFactory(salt=workload.salt, seed=workload.config.seed)
        ctx = RunContext(client=client, info=info, prompts=prompts, total=workload.total_requests())
        ctx.on_progress = on_progress
        state.ctx = ctx
        if info.tokenize:
            await calibrate(prompts, ctx.count_text)
        stopped = await _until_stopped(workload.prepare(ctx), stop)
        if stopped:
            state.interrupted = True
            return
        watcher = MetricsWatcher(client, workload.metrics_interval_s)
        ctx.engine_metrics = await watcher.start()
        state.started_at = time.time()
        state.interrupted = await _until_stopped(workload.measure(ctx), stop)
        state.ended_at = time.time()
        state.server = await watcher.finish()


async def _until_stopped(step: Coroutine[Any, Any, None], stop: threading.Event | None) -> bool:
    """Await `step`; True if it was cancelled because `stop` was set or Ctrl-C cancelled the run."""
    task = asyncio.create_task(step)
    waiter = asyncio.create_task(_wait_for(stop)) if stop is not None else None
    try:
        await asyncio.wait([t for t in (task, waiter) if t is not None], return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels the main task; end cleanly instead
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
    finally:
        if waiter is not None:
            waiter.cancel()
    if task.done() and not task.cancelled():
        task.result()  # a workload's own error propagates
        return False
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return True


async def _wait_for(stop: threading.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(STOP_POLL_SECONDS)


def _assemble(workload: Workload, target: BenchTarget, state: _State) -> BenchRun:
    ctx = state.ctx
    records = ctx.records if ctx is not None else []
    ended_at = state.ended_at or time.time()
    run = BenchRun(
        workload=workload.name,
        target=target,
        config={**workload.config.model_dump(mode="json"), **(ctx.effective if ctx else {})},
        engine_config=_engine_config(ctx),
        started_at=state.started_at,
        ended_at=ended_at,
        interrupted=state.interrupted,
        requests=records,
        summaries=latency_summaries(records),
        scalars=throughput_scalars(records, measured_window(records), workload.slo),
        server=state.server,
        environment=_environment(ctx),
    )
    return workload.finish(run)


def _engine_config(ctx: RunContext | None) -> dict[str, Any] | None:
    if ctx is None:
        return None
    config: dict[str, Any] = {}
    if ctx.info.max_model_len is not None:
        config["max_model_len"] = ctx.info.max_model_len
    if ctx.info.model_root:
        config["model"] = ctx.info.model_root
    if ctx.info.version:
        config["vllm_version"] = ctx.info.version
    if ctx.engine_metrics is not None and ctx.engine_metrics.cache_config:
        config["cache_config"] = ctx.engine_metrics.cache_config
    return config or None


def _environment(ctx: RunContext | None) -> dict[str, Any]:
    environment: dict[str, Any] = {
        "tokengate": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    if ctx is not None:
        environment["tokenize_available"] = ctx.info.tokenize
        environment["tokens_per_word"] = round(ctx.prompts.tokens_per_word, 4)
    return environment
