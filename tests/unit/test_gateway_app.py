"""The gateway's own behaviour in front of a stub upstream (vLLM's behaviour is tested live, against vLLM)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tokengate.gateway.app import GatewaySettings, create_app
from tokengate.gateway.auth import Identity
from tokengate.gateway.ledger import UsageRow
from tokengate.gateway.repairs import repairs_for
from tokengate.gateway.routing import Replica, Router
from tokengate.gateway.sse import EventSplitter

USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10, "prompt_tokens_details": {"cached_tokens": 4}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Upstream:
    """A stub engine: records what it received; `model` chooses its behaviour."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.slow_stream_cancelled = threading.Event()
        self.quiet_stream_cancelled = threading.Event()
        self.paths: list[str] = []
        self.client_ports: list[int] = []  # the gateway's side of each request's connection
        self.tokenized: list[dict[str, Any]] = []

    async def chat(self, request: Request) -> Response:
        body = json.loads(await request.body())
        self.received.append(body)
        self.headers.append(dict(request.headers))
        self.paths.append(request.url.path)
        self.client_ports.append(request.client.port if request.client else 0)
        if body["model"] == "rejects":
            return JSONResponse({"error": {"message": "bad tool_choice", "code": 400}}, status_code=400)
        if not body.get("stream"):
            return JSONResponse({"choices": [{"message": {"content": "hi"}}], "usage": USAGE})
        return StreamingResponse(self._events(body), media_type="text/event-stream")

    async def embeddings(self, request: Request) -> Response:
        body = json.loads(await request.body())
        self.received.append(body)
        self.headers.append(dict(request.headers))
        return JSONResponse({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}],
                             "usage": {"prompt_tokens": 2, "total_tokens": 2}})  # fmt: skip

    async def tokenize(self, request: Request) -> Response:
        body = json.loads(await request.body())
        self.tokenized.append(body)
        return JSONResponse({"count": 11, "max_model_len": 4096, "tokens": list(range(11))})

    async def _events(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        yield b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n'
        if body["model"] == "quiet":  # a long prefill: nothing after the role chunk for a long while
            try:
                await asyncio.sleep(30)
            finally:
                self.quiet_stream_cancelled.set()
        if body["model"] == "slow":
            try:
                for _ in range(600):
                    yield b'data: {"choices":[{"delta":{"content":"."}}]}\n\n'
                    await asyncio.sleep(0.05)
            finally:  # reached when the gateway closes the upstream connection
                self.slow_stream_cancelled.set()
        yield b'data: {"choices":[{"delta":{"content":"hel"}}]}\n\n'
        if body["model"] == "dies":
            raise RuntimeError("engine crashed")  # uvicorn aborts the connection mid-stream
        yield b'data: {"choices":[{"delta":{"content":"lo"},"finish_reason":"stop"}]}\n\n'
        if (body.get("stream_options") or {}).get("include_usage"):
            yield b'data: {"choices":[],"usage":' + json.dumps(USAGE).encode() + b"}\n\n"
        yield b"data: [DONE]\n\n"


def stream_chat(base: str, model: str) -> contextlib.AbstractContextManager[httpx.Response]:
    return httpx.stream(
        "POST", f"{base}/v1/chat/completions", json=chat(model, stream=True),
        headers={"Authorization": "Bearer good"}, timeout=10,
    )  # fmt: skip


def serve_in_thread(app: Any, port: int) -> Iterator[None]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[Upstream, int]]:
    stub = Upstream()
    port = free_port()
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", stub.chat, methods=["POST"]),
            Route("/health", lambda _request: Response(b"")),
            Route("/v1/models", lambda _request: JSONResponse({"data": [{"id": "any", "max_model_len": 4096}]})),
            Route("/tokenize", stub.tokenize, methods=["POST"]),
            Route("/v1/embeddings", stub.embeddings, methods=["POST"]),
            Route("/sick/health", lambda _request: Response(b"", status_code=503)),
            Route("/sick/v1/chat/completions", stub.chat, methods=["POST"]),
        ]
    )
    yield from ((stub, port) for _ in serve_in_thread(app, port))


@pytest.fixture(scope="module")
def gateway(upstream: tuple[Upstream, int]) -> Iterator[tuple[str, list[UsageRow]]]:
    _, port = upstream
    base = f"http://127.0.0.1:{port}"
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    def replica(name: str, url: str = base, family: str = "qwen3", key: str | None = None) -> Replica:
        return Replica(deployment=name, base_url=url, family=family, repairs=repairs_for(family, None), api_key=key)

    router = Router(
        routes={
            "qwen": [replica("qwen", key="upstream-secret")],
            "mistral": [replica("mistral", family="mistral")],
            "dies": [replica("dies")],
            "rejects": [replica("rejects")],
            "slow": [replica("slow")],
            "quiet": [replica("quiet")],
            "sickly": [replica("sick", f"{base}/sick"), replica("fine")],
            "down": [replica("down", dead)],
            "half-down": [replica("dead-one", dead), replica("live-one")],
            "coder": [
                Replica(deployment="qwen-coder", base_url=base, family="qwen3", repairs=(), served_names=("qwen",))
            ],
        }
    )
    keys = {
        "good": Identity(name="alice"),
        "qwen-only": Identity(name="bob", models=("qwen",)),
        "spent": Identity(name="carol", tokens_per_day=100),
    }
    rows: list[UsageRow] = []
    settings = GatewaySettings(
        router=router,
        lookup_key=keys.get,
        record_usage=rows.append,
        tokens_used_today=lambda name: 1000 if name == "carol" else 0,
        max_body_bytes=4096,
    )
    port = free_port()
    yield from ((f"http://127.0.0.1:{port}", rows) for _ in serve_in_thread(create_app(settings), port))


def post(base: str, body: Any, key: str | None = "good", **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{base}/v1/chat/completions", content=content, headers=headers, timeout=10, **kwargs)


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


def test_routes_adds_the_upstream_key_and_records_usage(
    gateway: tuple[str, list[UsageRow]], upstream: tuple[Upstream, int]
) -> None:
    base, rows = gateway
    stub, _ = upstream
    response = post(base, chat("qwen"))
    assert response.status_code == 200
    assert response.json()["usage"] == USAGE
    assert stub.headers[-1]["authorization"] == "Bearer upstream-secret"  # the client's key never goes upstream
    row = rows[-1]
    assert (row.key_name, row.model, row.deployment, row.status) == ("alice", "qwen", "qwen", 200)
    assert (row.prompt_tokens, row.cached_tokens, row.completion_tokens) == (7, 4, 3)


def test_a_route_alias_is_sent_under_the_engines_served_name(
    gateway: tuple[str, list[UsageRow]], upstream: tuple[Upstream, int]
) -> None:
    base, rows = gateway
    stub, _ = upstream
    assert post(base, chat("coder")).status_code == 200
    assert stub.received[-1]["model"] == "qwen"  # vLLM answers 404 to a name it does not serve
    assert (rows[-1].model, rows[-1].deployment) == ("coder", "qwen-coder")


def test_errors_are_openai_shaped_with_the_right_status(gateway: tuple[str, list[UsageRow]]) -> None:
    base, _ = gateway
    cases = [
        (post(base, chat("qwen"), key=None), 401, "missing API key"),
        (post(base, chat("qwen"), key="nope"), 401, "unknown or revoked"),
        (post(base, chat("mistral"), key="qwen-only"), 403, "may not use model 'mistral'"),
        (
            post(base, chat("llama")),
            404,
            "available: coder, dies, down, half-down, mistral, quiet, qwen, rejects, sickly, slow",
        ),
        (post(base, b"{not json"), 400, "not valid JSON"),
        (post(base, {"messages": []}), 400, "`model` is required"),
        (post(base, chat("qwen", padding="x" * 5000)), 413, "4096-byte limit"),
        (post(base, chat("qwen"), key="spent"), 429, "used 1000 of its 100 tokens"),
        (post(base, chat("down")), 503, "no healthy engine serves 'down'"),
        (post(base, chat("rejects")), 400, "bad tool_choice"),
    ]
    for response, status, message in cases:
        assert response.status_code == status, (status, response.text)
        assert message in response.json()["error"]["message"]
    assert cases[7][0].headers["retry-after"].isdigit()
    assert cases[8][0].headers["retry-after"] == "2"


def test_a_refused_replica_is_skipped(gateway: tuple[str, list[UsageRow]]) -> None:
    base, _ = gateway
    for _ in range(3):
        assert post(base, chat("half-down")).status_code == 200


def test_family_repairs_run_before_the_upstream_sees_the_request(
    gateway: tuple[str, list[UsageRow]], upstream: tuple[Upstream, int]
) -> None:
    base, _ = gateway
    stub, _ = upstream
    body = chat("mistral", tools=[], tool_choice="auto")
    body["messages"] += [{"role": "assistant", "content": ""}, {"role": "user", "content": "again"}]
    assert post(base, body).status_code == 200
    sent = stub.received[-1]
    assert "tools" not in sent
    assert "tool_choice" not in sent
    assert [m["role"] for m in sent["messages"]] == ["user", "user"]
    metrics = httpx.get(f"{base}/metrics").text
    assert 'tokengate_repairs_total{kind="empty_assistant_message"} 1.0' in metrics


def test_streaming_relays_events_and_hides_the_usage_chunk_it_added(
    gateway: tuple[str, list[UsageRow]], upstream: tuple[Upstream, int]
) -> None:
    base, rows = gateway
    stub, _ = upstream
    with stream_chat(base, "qwen") as response:
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert stub.received[-1]["stream_options"] == {"include_usage": True}  # asked upstream for the ledger
    assert events[-1] == "data: [DONE]"
    assert not any('"usage"' in event for event in events)  # the client did not ask for it
    assert rows[-1].completion_tokens == 3
    assert rows[-1].ttft_ms is not None


def test_an_upstream_dying_mid_stream_ends_with_an_error_event(gateway: tuple[str, list[UsageRow]]) -> None:
    base, rows = gateway
    with stream_chat(base, "dies") as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert '"hel"' in events[1]
    error = json.loads(events[-1].removeprefix("data: "))["error"]
    assert "dies" in error["message"]
    assert rows[-1].status == 502


def test_models_lists_what_the_key_may_use(gateway: tuple[str, list[UsageRow]]) -> None:
    base, _ = gateway
    models = httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer qwen-only"}).json()
    assert [m["id"] for m in models["data"]] == ["qwen"]
    assert httpx.get(f"{base}/health").status_code == 200


def test_models_carry_the_engines_context_length_once_every_replica_reported_it(
    gateway: tuple[str, list[UsageRow]],
) -> None:
    """Before: the gateway listed no `max_model_len`, so bench and validate could not size prompts through it."""
    base, _ = gateway
    deadline = time.monotonic() + 10  # the health probe asks each healthy engine once, at startup
    while time.monotonic() < deadline:
        listed = {m["id"]: m.get("max_model_len") for m in httpx.get(f"{base}/v1/models",
                  headers={"Authorization": "Bearer good"}).json()["data"]}  # fmt: skip
        if listed["qwen"] is not None:
            break
        time.sleep(0.05)
    assert listed["qwen"] == listed["mistral"] == 4096
    assert listed["sickly"] is None  # one of its replicas fails health: its length is not known
    assert listed["down"] is None


def test_the_event_loop_is_not_blocked_by_a_slow_stream(gateway: tuple[str, list[UsageRow]]) -> None:
    base, _ = gateway

    async def many() -> list[int]:
        async with httpx.AsyncClient(timeout=10, headers={"Authorization": "Bearer good"}) as client:
            responses = await asyncio.gather(*(client.post(f"{base}/v1/chat/completions", json=chat("qwen"))
                                               for _ in range(20)))  # fmt: skip
        return [r.status_code for r in responses]

    assert asyncio.run(many()) == [200] * 20


def test_a_client_that_disconnects_cancels_the_upstream_request(
    gateway: tuple[str, list[UsageRow]], upstream: tuple[Upstream, int]
) -> None:
    base, _ = gateway
    stub, _ = upstream
    with stream_chat(base, "slow") as response:
        for index, _line in enumerate(response.iter_lines()):
            if index == 3:
                break  # leaving the block closes the connection mid-stream
    # The stub would stream for 30 s; it is told to stop long before (the wait is a bound, not a measurement).
    assert stub.slow_stream_cancelled.wait(timeout=20)


def test_a_client_that_leaves_while_the_engine_is_silent_cancels_it_and_is_recorded_as_gone(
    gateway: tuple[str, list[UsageRow]], upstream: tuple[Upstream, int]
) -> None:
    base, rows = gateway
    stub, _ = upstream
    with stream_chat(base, "quiet") as response:
        assert response.status_code == 200
        next(response.iter_lines())  # the role chunk; then the engine says nothing, and the client leaves
    assert stub.quiet_stream_cancelled.wait(timeout=20)  # a bound, not a measurement
    deadline = time.monotonic() + 10
    while not any(row.model == "quiet" for row in rows) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [row.status for row in rows if row.model == "quiet"] == [499]


def test_finished_streams_leave_their_engine_connection_open_for_the_next_request(
    gateway: tuple[str, list[UsageRow]], upstream: tuple[Upstream, int]
) -> None:
    base, _ = gateway
    stub, _ = upstream
    for _ in range(3):
        with stream_chat(base, "qwen") as response:
            assert response.read().rstrip().endswith(b"data: [DONE]")
    assert len(set(stub.client_ports[-3:])) == 1


def test_a_replica_failing_health_gets_no_traffic(
    gateway: tuple[str, list[UsageRow]], upstream: tuple[Upstream, int]
) -> None:
    base, _ = gateway
    stub, _ = upstream
    before = len(stub.paths)
    for _ in range(4):
        assert post(base, chat("sickly")).status_code == 200
    assert stub.paths[before:] == ["/v1/chat/completions"] * 4  # never /sick/…


def test_events_are_cut_wherever_the_engine_bytes_break() -> None:
    splitter = EventSplitter()
    assert splitter.feed(b'data: {"a"') == []
    assert splitter.feed(b":1}\n\ndata: [DO") == [b'data: {"a":1}']
    assert splitter.feed(b"NE]\n\n\n\n") == [b"data: [DONE]", b""]


def test_an_unexpected_failure_is_still_an_api_shaped_500_in_each_api() -> None:
    def broken_lookup(_plaintext: str) -> None:
        raise RuntimeError("the key store is gone")

    app = create_app(GatewaySettings(router=Router(), lookup_key=broken_lookup))
    client = TestClient(app, raise_server_exceptions=False)
    headers = {"Authorization": "Bearer any"}
    openai = client.post("/v1/chat/completions", json={"model": "m", "messages": []}, headers=headers)
    assert openai.status_code == 500
    assert openai.json()["error"]["message"] == "the gateway failed on this request; its log says why"
    anthropic = client.post("/v1/messages", json={"model": "m", "messages": [], "max_tokens": 1}, headers=headers)
    assert anthropic.status_code == 500
    assert anthropic.json()["type"] == "error" and anthropic.json()["error"]["type"] == "api_error"


def test_an_engine_that_fails_between_the_request_and_its_answer_is_a_502_naming_it() -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def half_answer() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-")  # then the engine process dies
        listener.close()

    threading.Thread(target=half_answer, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    replica = Replica(deployment="flaky", base_url=url, family="qwen3", repairs=())
    app = create_app(GatewaySettings(router=Router(routes={"m": [replica]}), auth_required=False))
    response = TestClient(app).post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert response.status_code == 502
    assert response.json()["error"]["message"].startswith("engine flaky failed before answering")


@pytest.mark.parametrize(
    ("malformed", "field"),
    [
        ({"metadata": "user-1"}, "metadata"),
        ({"stop_sequences": "END"}, "stop_sequences"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": 7}]}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "image", "source": "a.png"}]}]}, "source"),
    ],
    ids=["metadata", "stop_sequences", "text", "image"],
)
def test_a_malformed_messages_request_is_a_400_and_gives_the_keys_slot_back(
    malformed: dict[str, Any], field: str
) -> None:
    """Before: these raised inside the translation, the 500 handler kept the key's in-flight slot, and a key with
    `max_concurrent: 1` was refused (429) for good after one such request."""
    replica = Replica(deployment="d", base_url="http://127.0.0.1:9", family="qwen3", repairs=())
    keys = {"one": Identity(name="solo", max_concurrent=1)}
    app = create_app(GatewaySettings(router=Router(routes={"m": [replica]}), lookup_key=keys.get))
    client = TestClient(app, raise_server_exceptions=False)
    body = {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}], **malformed}
    for _ in range(2):
        answer = client.post("/v1/messages", json=body, headers={"x-api-key": "one"})
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["type"] == "invalid_request_error"
        assert field in answer.json()["error"]["message"]
    assert app.state.gateway.in_flight["solo"] == 0


def test_a_failure_inside_the_translation_is_a_500_that_gives_the_keys_slot_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(_body: dict[str, Any], *, stream: bool = False) -> dict[str, Any]:
        raise RuntimeError("a translation bug")

    monkeypatch.setattr("tokengate.gateway.messages_api.messages_to_chat", broken)
    replica = Replica(deployment="d", base_url="http://127.0.0.1:9", family="qwen3", repairs=())
    keys = {"one": Identity(name="solo", max_concurrent=1)}
    app = create_app(GatewaySettings(router=Router(routes={"m": [replica]}), lookup_key=keys.get))
    client = TestClient(app, raise_server_exceptions=False)
    body = {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    assert [client.post("/v1/messages", json=body, headers={"x-api-key": "one"}).status_code for _ in range(2)] == [
        500, 500,
    ]  # fmt: skip
    assert app.state.gateway.in_flight["solo"] == 0


def test_an_engine_that_goes_silent_mid_stream_ends_the_clients_stream_with_an_error_event(
    upstream: tuple[Upstream, int],
) -> None:
    _, port = upstream
    replica = Replica(deployment="hung", base_url=f"http://127.0.0.1:{port}", family="qwen3", repairs=())
    settings = GatewaySettings(router=Router(routes={"quiet": [replica]}), auth_required=False,
                               upstream_idle_timeout=0.3)  # fmt: skip
    gateway_port = free_port()
    for _ in serve_in_thread(create_app(settings), gateway_port):
        with stream_chat(f"http://127.0.0.1:{gateway_port}", "quiet") as response:
            lines = [line for line in response.iter_lines() if line]
        assert lines[0].startswith('data: {"choices"')
        assert "engine hung failed mid-stream: the engine sent nothing for 0.3 s" in lines[-1]


def test_malformed_tool_arguments_are_replaced_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    replica = Replica(deployment="devstral", base_url="http://127.0.0.1:9", family="mistral",
                      repairs=repairs_for("mistral", None))  # fmt: skip
    app = create_app(GatewaySettings(router=Router(routes={"m": [replica]}), auth_required=False))
    call = {"id": "abcdefghi", "type": "function", "function": {"name": "f", "arguments": "{ invalid json"}}
    body = {"messages": [{"role": "assistant", "content": None, "tool_calls": [call]}]}
    with caplog.at_level("WARNING", logger="tokengate.gateway.app"):
        repaired = app.state.gateway.repair(body, replica)
    assert repaired["messages"][0]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert "devstral: 1 replayed tool call(s) had arguments that are not a JSON object" in caplog.text
    assert "invalid json" not in caplog.text  # what the model wrote may be the user's data: not logged


def test_count_tokens_counts_the_prompt_as_the_family_repairs_would_send_it(
    gateway: tuple[str, list[UsageRow]], upstream: tuple[Upstream, int]
) -> None:
    """Before: count_tokens sent Mistral the unrepaired history, which vLLM refuses (an empty assistant turn)."""
    base, _ = gateway
    stub, _ = upstream
    body = {"model": "mistral", "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}, {"role": "user", "content": "again"},
    ]}  # fmt: skip
    before = httpx.get(f"{base}/metrics").text
    answer = httpx.post(f"{base}/v1/messages/count_tokens", json=body, headers={"x-api-key": "good"}, timeout=10)
    assert answer.status_code == 200 and answer.json() == {"input_tokens": 11}
    assert [m["role"] for m in stub.tokenized[-1]["messages"]] == ["user", "user"]
    assert [line for line in httpx.get(f"{base}/metrics").text.splitlines() if "repairs_total{" in line] == [
        line for line in before.splitlines() if "repairs_total{" in line
    ]  # counting is not repairing a request: /metrics counts only what was sent for an answer


def test_embeddings_pass_through_with_the_engine_key_and_are_recorded(
    gateway: tuple[str, list[UsageRow]], upstream: tuple[Upstream, int]
) -> None:
    base, rows = gateway
    stub, _ = upstream
    answer = httpx.post(f"{base}/v1/embeddings", json={"model": "qwen", "input": "hi"},
                        headers={"Authorization": "Bearer good"}, timeout=10)  # fmt: skip
    assert answer.status_code == 200 and answer.json()["data"][0]["embedding"] == [0.5, 0.25]
    assert stub.received[-1] == {"model": "qwen", "input": "hi"}  # no chat repairs, no stream options
    assert stub.headers[-1]["authorization"] == "Bearer upstream-secret"
    assert (rows[-1].model, rows[-1].prompt_tokens, rows[-1].status) == ("qwen", 2, 200)


def test_a_known_key_refused_before_routing_gets_a_ledger_row_and_an_anonymous_one_does_not(
    gateway: tuple[str, list[UsageRow]],
) -> None:
    """Before: only requests that reached an engine were in the ledger, so `usage` never showed throttling."""
    base, rows = gateway
    before = len(rows)
    assert post(base, chat("qwen"), key="spent").status_code == 429
    assert post(base, chat("mistral"), key="qwen-only").status_code == 403
    assert post(base, chat("llama")).status_code == 404
    assert post(base, chat("down")).status_code == 503
    assert post(base, chat("qwen"), key="nope").status_code == 401
    assert post(base, b"{not json").status_code == 400
    deadline = time.monotonic() + 5
    while len(rows) < before + 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    refused = [(r.key_name, r.model, r.deployment, r.status, r.tokens) for r in rows[before:]]
    assert refused == [
        ("carol", "qwen", "", 429, 0), ("bob", "mistral", "", 403, 0), ("alice", "llama", "", 404, 0),
        ("alice", "down", "", 503, 0),
    ]  # fmt: skip


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_a_silent_engine_s_stream_carries_keep_alive_comments_the_sdks_skip(
    upstream: tuple[Upstream, int], api: str
) -> None:
    """Before: nothing was sent while the engine was silent (a long prefill), so idle timers of clients and
    proxies could close a healthy stream."""
    _, port = upstream
    replica = Replica(deployment="thinking", base_url=f"http://127.0.0.1:{port}", family="qwen3", repairs=())
    settings = GatewaySettings(router=Router(routes={"quiet": [replica]}), auth_required=False,
                               stream_keepalive_seconds=0.1)  # fmt: skip
    gateway_port = free_port()
    anthropic = {"model": "quiet", "max_tokens": 4, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    path, body = (
        ("/v1/chat/completions", chat("quiet", stream=True)) if api == "openai" else ("/v1/messages", anthropic)
    )
    for _ in serve_in_thread(create_app(settings), gateway_port):
        lines: list[str] = []
        with httpx.stream("POST", f"http://127.0.0.1:{gateway_port}{path}", json=body, timeout=10) as response:
            for line in response.iter_lines():
                lines.append(line)
                if lines.count(": keep-alive") == 3:
                    break  # the stub stays silent for 30 s: three comments in a row is the proof
        first_comment = lines.index(": keep-alive")
        assert any(line.startswith("data: ") for line in lines[:first_comment])  # the engine's first chunk came first
