"""Stand-ins for the tune unit tests: a stub engine process (our own code isolated from vLLM) and fake workloads.

The stub answers /health, a streamed chat completion (the warm-up), /metrics and /argv (its own command line,
so a fake workload can tell which configuration it is talking to). Environment switches make it fail at startup
with vLLM's real KV-cache error text, or ignore SIGTERM (an engine that outlives a killed tokengate).
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import yaml

from tokengate.processes import group_alive
from tokengate.testing.process_scan import processes_mentioning
from tokengate.testing.tiny_model import create_tiny_model, parse_spec
from tokengate.tune.space import SearchSpace, load_space
from tokengate.tune.trial import Endpoint, Measurement, Workload

MIB = 1024 * 1024
STUB = r"""
import json, os, signal, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

args = sys.argv[1:]
def flag(name, default=None):
    return args[args.index(name) + 1] if name in args else default

if os.environ.get("STUB_IGNORE_TERM") == "1":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("stub engine", " ".join(args), flush=True)
if os.environ.get("STUB_FAIL_KV_SEQS", "-") == flag("--max-num-seqs", "1"):
    print("ValueError: To serve at least one request with the model's max seq len (4096), (0.50 GiB KV cache is "
          "needed, which is larger than the available KV cache memory (0.25 GiB). Based on the available memory, "
          "the estimated maximum model length is 2048. Try increasing `gpu_memory_utilization` or decreasing "
          "`max_model_len` when initializing the engine.", flush=True)
    sys.exit(1)
CHUNKS = [
    {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"content": " there"}, "finish_reason": "length"}]},
    {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
]

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body, kind="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            self.reply(200, b"")
        elif self.path == "/argv":
            self.reply(200, json.dumps({"argv": args, "pid": os.getpid()}).encode())
        elif self.path == "/metrics":
            self.reply(200, b"vllm:num_requests_running 0\nvllm:num_requests_waiting 0\n", "text/plain")
        else:
            self.reply(404, b"{}")

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = "".join(f"data: {json.dumps(c)}\n\n" for c in CHUNKS) + "data: [DONE]\n\n"
        self.reply(200, body.encode(), "text/event-stream")

ThreadingHTTPServer(("127.0.0.1", int(flag("--port"))), Handler).serve_forever()
"""


def write_stub(directory: Path) -> Path:
    path = directory / "stub_engine.py"
    path.write_text(STUB)
    return path


def make_tiny_model(directory: Path) -> Path:
    """A real tiny model directory: the planner reads its config.json and weights, the stub ignores it."""
    return create_tiny_model(directory / "tiny-qwen3", parse_spec(family="qwen3")).path


def space_document(model: Path, stub: Path, state: Path, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "version": 1,
        "state_dir": str(state),
        "base": {
            "name": "tiny", "model": str(model), "served_model_name": "tiny", "gpu": "cpu", "port": 8101,
            "command": [sys.executable, str(stub)], "health_timeout": 30,
            "engine_args": {"max-model-len": 4096, "enforce-eager": True, "kv-cache-memory-bytes": 64 * MIB,
                            "max-num-seqs": 1, "enable-prefix-caching": True},
        },
        "parameters": {"max-num-seqs": [1, 8], "enable-prefix-caching": [True, False]},
        "candidates": [{"max-num-seqs": 8, "kv-cache-memory-bytes": 2 * MIB}],
        "workload": {"kind": "multiturn", "args": {"sessions": 8, "turns": 3}, "warmup_requests": 1},
        "objective": {"metric": "output_tokens_per_second", "goal": "maximize"},
        "constraints": [{"metric": "failed_requests", "max": 0}],
        "repeats": 3,
        "search": {"strategy": "grid"},
    }  # fmt: skip
    document.update(changes)
    return document


def write_space(directory: Path, document: dict[str, Any], name: str = "space.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def stub_space(tmp_path: Path, model: Path, **changes: Any) -> SearchSpace:
    stub = write_stub(tmp_path)
    return load_space(write_space(tmp_path, space_document(model, stub, tmp_path / "state", **changes)))


def engine_info(endpoint: Endpoint) -> dict[str, Any]:
    info: dict[str, Any] = httpx.get(f"{endpoint.base_url}/argv", timeout=5).json()
    return info


def max_num_seqs(info: dict[str, Any]) -> int:
    argv = info["argv"]
    return int(argv[argv.index("--max-num-seqs") + 1]) if "--max-num-seqs" in argv else 1


class FakeWorkload:
    """Throughput 100 x max_num_seqs (prefix caching makes no difference), with a small repeatable jitter.

    `kill_when_seqs`: on the first run against such an engine, SIGKILL the engine's group and wait for the
    trial's watcher to set `stop`, as a real workload would see a crash. `block_when_seqs`: touch `ready` and
    block forever (a tokengate killed mid-trial)."""

    def __init__(
        self, *, kill_when_seqs: int | None = None, block_when_seqs: int | None = None, ready: Path | None = None
    ) -> None:
        self.kill_when_seqs = kill_when_seqs
        self.block_when_seqs = block_when_seqs
        self.ready = ready
        self.calls: list[dict[str, Any]] = []
        self.stop_seen: list[bool] = []
        self._jitter = itertools.cycle([-3.0, 0.0, 3.0])

    def __call__(self, endpoint: Endpoint, stop: threading.Event) -> Measurement:
        info = engine_info(endpoint)
        self.calls.append(info)
        seqs = max_num_seqs(info)
        if seqs == self.kill_when_seqs:
            self.kill_when_seqs = None
            os.killpg(info["pid"], signal.SIGKILL)
            self.stop_seen.append(stop.wait(10))
            return Measurement(metrics={}, interrupted=True)
        if seqs == self.block_when_seqs and self.ready is not None:
            self.ready.write_text(str(info["pid"]))
            threading.Event().wait()
        throughput = 100.0 * seqs + next(self._jitter)
        ttft = [400.0 / seqs + i for i in range(8)]
        return Measurement(
            metrics={
                "output_tokens_per_second": throughput, "completed_requests": 24.0, "failed_requests": 0.0,
                "ttft_ms.p50": 400.0 / seqs, "ttft_ms.p90": 800.0 / seqs, "e2e_ms.p50": 1000.0 / seqs,
            },
            samples={"ttft_ms": ttft, "e2e_ms": [t * 2 for t in ttft]},
        )  # fmt: skip


def as_workload(fake: FakeWorkload) -> Workload:
    return fake


def stub_processes(marker: Path) -> list[int]:
    """Live processes whose command line mentions `marker` (the stub script of one test)."""
    return [pid for pid in processes_mentioning(marker) if pid != os.getpid()]


def test_the_stub_reports_its_argv_and_dies_with_its_group(tmp_path: Path) -> None:
    from tokengate.processes import ProcessGroup
    from tokengate.testing.vllm_server import free_port

    port = free_port()
    stub = write_stub(tmp_path)
    process = ProcessGroup.start([sys.executable, str(stub), "--port", str(port)], log_path=tmp_path / "stub.log")
    try:
        info: dict[str, Any] = {}
        for _ in range(200):
            try:
                info = httpx.get(f"http://127.0.0.1:{port}/argv", timeout=1).json()
                break
            except httpx.HTTPError:
                threading.Event().wait(0.05)
        assert info["pid"] == process.pid
        assert max_num_seqs(info) == 1
    finally:
        process.stop()
    assert not group_alive(process.pid)
