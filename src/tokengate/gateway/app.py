"""The gateway's ASGI app: auth → route → repair → pooled upstream (streaming) → ledger and metrics.

OpenAI's endpoints are proxied here; Anthropic's `/v1/messages` is translated in `messages_api`.

Starlette for the app, our own pooled HTTP/1.1 client for engines (`upstream`), orjson for bodies.
benchmarks/gateway_overhead.py measures the cost.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tokengate.gateway import messages_api
from tokengate.gateway.auth import OPEN, Identity, KeyLookup, presented_key
from tokengate.gateway.errors import error_response, stream_error_event
from tokengate.gateway.ledger import UsageRow
from tokengate.gateway.repairs import apply_repairs
from tokengate.gateway.routing import Replica, Router
from tokengate.gateway.sse import KEEPALIVE_SECONDS, EventSplitter, EventStreamResponse
from tokengate.gateway.upstream import (
    IDLE_TIMEOUT_SECONDS,
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
    UpstreamSilentError,
    fetch,
)

logger = logging.getLogger(__name__)

UPSTREAM_DOWN_RETRY_AFTER = 2
HEALTH_PROBE_SECONDS = 5.0
HEALTH_PROBE_TIMEOUT_SECONDS = 2.0
SECONDS_PER_DAY = 86400


@dataclass
class GatewaySettings:
    router: Router
    auth_required: bool = True
    lookup_key: KeyLookup = lambda _plaintext: None
    record_usage: Callable[[UsageRow], None] = lambda _row: None
    tokens_used_today: Callable[[str], int] = lambda _key_name: 0
    max_body_bytes: int = 32 * 1024 * 1024
    upstream_idle_timeout: float = IDLE_TIMEOUT_SECONDS
    stream_keepalive_seconds: float = KEEPALIVE_SECONDS  # a comment line on a stream silent this long
    on_shutdown: Callable[[], None] = lambda: None  # e.g. flush the ledger: runs before the server process exits


@dataclass
class _Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "tokengate_requests", "Requests by model and HTTP status", ["model", "status"], registry=self.registry
        )
        self.repairs = Counter(
            "tokengate_repairs", "Request repairs applied, by kind", ["kind"], registry=self.registry
        )
        self.upstream_errors = Counter(
            "tokengate_upstream_errors", "Upstream failures by deployment and kind", ["deployment", "kind"],
            registry=self.registry,
        )  # fmt: skip
        self.volatile_removed = Counter(
            "tokengate_prefix_volatile_removed",
            "Per-request volatile lines removed from Anthropic system prompts so the prefix cache can hit, by kind",
            ["kind"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "tokengate_request_seconds", "Time to the last byte, by model", ["model"], registry=self.registry
        )


class Gateway:
    """Holds what outlives one request: routes, the upstream pool, metrics, per-key concurrency."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.metrics = _Metrics()
        self.in_flight: dict[str, int] = defaultdict(int)
        self.pool = UpstreamPool(idle_timeout=settings.upstream_idle_timeout)

    async def close(self) -> None:
        await self.pool.close()

    async def probe_health(self) -> None:
        """Every few seconds, ask each replica's /health; one that fails is skipped until it passes again."""
        while True:
            for replica in self.settings.router.replicas:
                try:
                    async with asyncio.timeout(HEALTH_PROBE_TIMEOUT_SECONDS):
                        status, _ = await fetch(self.pool, replica.origin, "GET", "/health")
                        replica.passes_health = status == 200
                        if replica.passes_health and replica.max_model_len is None:
                            replica.max_model_len = _max_model_len(
                                await fetch(self.pool, replica.origin, "GET", "/v1/models")
                            )
                except (TimeoutError, UpstreamError):
                    replica.passes_health = False
                if not replica.passes_health:
                    replica.max_model_len = None  # read again when it is back: it may return with other args
            await asyncio.sleep(HEALTH_PROBE_SECONDS)

    # --- endpoints ---------------------------------------------------------------------------------------------

    async def health(self, _request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def metrics_endpoint(self, _request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def list_models(self, request: Request) -> Response:
        identity, denied = self._identify(request)
        if denied is not None:
            return denied
        created = int(time.time())
        router = self.settings.router
        data = []
        for name in router.models:
            if identity.allows(name):
                entry: dict[str, Any] = {"id": name, "object": "model", "created": created, "owned_by": "tokengate"}
                max_model_len = router.max_model_len(name)
                if max_model_len is not None:  # as vLLM lists it: clients size their prompts by it
                    entry["max_model_len"] = max_model_len
                data.append(entry)
        return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")

    async def proxy(self, request: Request) -> Response:
        started = time.perf_counter()
        admitted = await self.admit(request)
        if isinstance(admitted, Response):
            return admitted
        body, model, identity = admitted
        path = request.scope["path"]
        opened = await self.open_upstream(path, lambda replica: self._prepare(body, replica, path), model, identity,
                                          started)  # fmt: skip
        if isinstance(opened, Response):
            return opened
        call, upstream, outgoing, wants_usage_chunk = opened
        if outgoing.get("stream") and upstream.status == 200:
            return EventStreamResponse(
                call.relay_stream(upstream, strip_usage=not wants_usage_chunk), self.settings.stream_keepalive_seconds
            )
        return await call.relay_whole(upstream)

    async def admit(
        self, request: Request, *, check_quota: bool = True
    ) -> tuple[dict[str, Any], str, Identity] | Response:
        """Body, model and caller of a request that may go on; else the error to answer with.
        On success with `check_quota`, the caller's in-flight count is raised: `open_upstream` releases it.

        A known key refused here (model not allowed, unknown model, over quota) gets a ledger row with its status,
        so `usage` shows who was throttled; anonymous and malformed requests do not (anyone could fill the disk)."""
        started = time.perf_counter()
        body, problem = await self._read_body(request)
        if problem is not None:
            return problem
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return error_response(
                400, f"`model` is required; this gateway serves: {', '.join(self.settings.router.models)}",
                param="model",
            )  # fmt: skip
        identity, denied = self._identify(request, model)
        if denied is not None:
            return self._refused(identity, model, denied, started)
        if model not in self.settings.router.routes:
            return self._refused(identity, model, error_response(
                404, f"model {model!r} is not served here; available: {', '.join(self.settings.router.models)}",
                code="model_not_found", param="model",
            ), started)  # fmt: skip
        if check_quota:
            refused = self._over_quota(identity)
            if refused is not None:
                return self._refused(identity, model, refused, started)
            self.in_flight[identity.name] += 1  # released by _Call._finish, or in open_upstream if nothing was sent
        return body, model, identity

    def _refused(self, identity: Identity, model: str, response: Response, started: float) -> Response:
        self.metrics.requests.labels(model, str(response.status_code)).inc()
        if identity is not OPEN or not self.settings.auth_required:
            self.settings.record_usage(UsageRow(
                time=time.time(), key_name=None if identity is OPEN else identity.name, model=model, deployment="",
                prompt_tokens=0, completion_tokens=0, status=response.status_code,
                latency_ms=(time.perf_counter() - started) * 1000,
            ))  # fmt: skip
        return response

    async def open_upstream(
        self,
        path: str,
        prepare: Callable[[Replica], tuple[dict[str, Any], bool]],
        model: str,
        identity: Identity,
        started: float,
    ) -> tuple[_Call, UpstreamResponse, dict[str, Any], bool] | Response:
        """Send the request (as `prepare` writes it for each replica) to a healthy replica, trying the next one
        when a connection is refused. Returns the call, the upstream response (headers read), what was sent,
        and whether the client asked for the usage chunk; or a 503 when no replica answers."""
        tried: set[str] = set()
        while True:
            replica = self.settings.router.choose(model)
            if replica is None or replica.deployment in tried:
                self.in_flight[identity.name] -= 1
                return self._refused(identity, model, error_response(
                    503, f"no healthy engine serves {model!r} right now", code="upstream_unavailable",
                    retry_after=UPSTREAM_DOWN_RETRY_AFTER,
                ), started)  # fmt: skip
            tried.add(replica.deployment)
            try:
                outgoing, wants_usage_chunk = prepare(replica)
            except BaseException:
                self.in_flight[identity.name] -= 1
                raise
            replica.outstanding += 1
            try:
                upstream = await self._send(replica, path, outgoing)
            except UpstreamConnectError:
                replica.outstanding -= 1
                replica.mark_unhealthy()
                self.metrics.upstream_errors.labels(replica.deployment, "connect").inc()
                continue
            except UpstreamError as exc:  # the engine took the request, then failed before its answer began
                replica.outstanding -= 1
                self.in_flight[identity.name] -= 1
                status = 504 if isinstance(exc, UpstreamSilentError) else 502
                self.metrics.upstream_errors.labels(replica.deployment, "silent" if status == 504 else "answer").inc()
                self.metrics.requests.labels(model, str(status)).inc()
                return error_response(status, f"engine {replica.deployment} failed before answering: {exc}")
            except BaseException:
                replica.outstanding -= 1
                self.in_flight[identity.name] -= 1
                raise
            return _Call(self, replica, identity, model, started), upstream, outgoing, wants_usage_chunk

    # --- steps ---------------------------------------------------------------------------------------------------

    async def _read_body(self, request: Request) -> tuple[dict[str, Any], Response | None]:
        declared = request.headers.get("content-length")
        limit = self.settings.max_body_bytes
        if declared and declared.isdigit() and int(declared) > limit:
            return {}, error_response(413, f"request body is over the {limit}-byte limit")
        raw = await request.body()
        if len(raw) > limit:
            return {}, error_response(413, f"request body is over the {limit}-byte limit")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return {}, error_response(400, f"request body is not valid JSON: {exc}")
        if not isinstance(body, dict):
            return {}, error_response(400, "request body must be a JSON object")
        return body, None

    def _identify(self, request: Request, model: str | None = None) -> tuple[Identity, Response | None]:
        if not self.settings.auth_required:
            return OPEN, None
        key = presented_key(request.headers)
        if key is None:
            return OPEN, error_response(401, "missing API key: send `Authorization: Bearer <key>`", code="no_key")
        identity = self.settings.lookup_key(key)
        if identity is None:
            return OPEN, error_response(401, "unknown or revoked API key", code="invalid_api_key")
        if model is not None and not identity.allows(model):
            return identity, error_response(
                403, f"key {identity.name!r} may not use model {model!r}; it may use: {', '.join(identity.models)}",
                code="model_not_allowed",
            )  # fmt: skip
        return identity, None

    def _over_quota(self, identity: Identity) -> Response | None:
        if identity.max_concurrent is not None and self.in_flight[identity.name] >= identity.max_concurrent:
            return error_response(
                429, f"key {identity.name!r} already has {identity.max_concurrent} requests in flight",
                code="concurrency_limit", retry_after=1,
            )  # fmt: skip
        if identity.tokens_per_day is not None:
            used = self.settings.tokens_used_today(identity.name)
            if used >= identity.tokens_per_day:
                until_midnight = SECONDS_PER_DAY - int(time.time()) % SECONDS_PER_DAY
                return error_response(
                    429, f"key {identity.name!r} used {used} of its {identity.tokens_per_day} tokens today (UTC)",
                    code="token_quota", retry_after=until_midnight,
                )  # fmt: skip
        return None

    def _prepare(self, body: dict[str, Any], replica: Replica, path: str) -> tuple[dict[str, Any], bool]:
        """Repairs for the replica's family, and usage requested upstream so the ledger can count a stream."""
        outgoing = self.repair(body, replica) if path.endswith("/chat/completions") else body
        engine_model = replica.engine_model(body["model"])
        if engine_model != body["model"]:
            outgoing = {**outgoing, "model": engine_model}
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if outgoing.get("stream") and not wants_usage and not path.endswith(("/embeddings", "/tokenize")):
            outgoing = {**outgoing, "stream_options": {**(outgoing.get("stream_options") or {}), "include_usage": True}}
        return outgoing, wants_usage

    def repair(self, body: dict[str, Any], replica: Replica) -> dict[str, Any]:
        """The chat request with the replica's family repairs applied, counted in /metrics by kind."""
        if not replica.repairs:
            return body
        repaired, counts = apply_repairs(body, replica.repairs)
        for kind, count in counts.items():
            self.metrics.repairs.labels(kind).inc(count)
        if "malformed_tool_arguments" in counts:  # the model's own output was broken: worth an operator's look
            logger.warning(
                "%s: %d replayed tool call(s) had arguments that are not a JSON object; sent as {} instead",
                replica.deployment, counts["malformed_tool_arguments"],
            )  # fmt: skip
        return repaired

    async def _send(self, replica: Replica, path: str, body: dict[str, Any]) -> UpstreamResponse:
        return await self.pool.request(replica.origin, "POST", path, orjson.dumps(body))


class _Call:
    """One forwarded request: relays the answer and records what it cost."""

    def __init__(self, gateway: Gateway, replica: Replica, identity: Identity, model: str, started: float) -> None:
        self.gateway = gateway
        self.replica = replica
        self.identity = identity
        self.model = model
        self.started = started
        self.first_token_at: float | None = None
        self.usage: dict[str, Any] = {}

    async def relay_whole(self, upstream: UpstreamResponse) -> Response:
        try:
            payload = await upstream.read()
        except UpstreamError as exc:
            self.finish(502)
            return error_response(502, f"engine {self.replica.deployment} failed mid-answer: {exc}")
        finally:
            upstream.release()
        if upstream.status == 200:
            self.usage = _usage_of(payload)
        self.finish(upstream.status)
        content_type = upstream.headers.get("content-type", "application/json")
        return Response(payload, status_code=upstream.status, media_type=content_type)

    async def relay_stream(self, upstream: UpstreamResponse, *, strip_usage: bool) -> AsyncIterator[bytes]:
        status = 200
        splitter = EventSplitter()
        done = False
        try:
            async for chunk in upstream.chunks():
                forwarded = []  # every event this read completed goes out in one write: nothing waits for more
                for event in splitter.feed(chunk):
                    done = done or event.startswith(b"data: [DONE]")
                    kept = self._inspect(event, strip_usage)
                    if kept is not None:
                        forwarded.append(kept + b"\n\n")
                if forwarded:
                    yield b"".join(forwarded)
            if not done:
                status = 502
                yield stream_error_event(f"engine {self.replica.deployment} ended the stream before [DONE]")
        except (TimeoutError, UpstreamError) as exc:
            status = 502
            self.gateway.metrics.upstream_errors.labels(self.replica.deployment, "stream").inc()
            yield stream_error_event(f"engine {self.replica.deployment} failed mid-stream: {exc or type(exc).__name__}")
        except (asyncio.CancelledError, GeneratorExit):
            status = 499  # the client went away; closing the upstream below cancels the engine's work
            raise
        finally:
            upstream.release()  # reused when the stream ended; closed (the engine stops) if not
            self.finish(status)

    def _inspect(self, event: bytes, strip_usage: bool) -> bytes | None:
        if self.first_token_at is None and b'"delta"' in event and (b'"content"' in event or b'"reasoning' in event):
            self.first_token_at = time.perf_counter()
        if b'"usage"' not in event or not event.startswith(b"data: {"):
            return event
        try:
            chunk = orjson.loads(event[6:])
        except orjson.JSONDecodeError:
            return event
        if chunk.get("usage"):
            self.usage = chunk["usage"]
            if strip_usage and not chunk.get("choices"):
                return None  # the usage-only chunk we asked for on the client's behalf
        return event

    def finish(self, status: int) -> None:
        self.replica.outstanding -= 1
        self.gateway.in_flight[self.identity.name] -= 1
        elapsed = time.perf_counter() - self.started
        metrics = self.gateway.metrics
        metrics.requests.labels(self.model, str(status)).inc()
        metrics.latency.labels(self.model).observe(elapsed)
        details = self.usage.get("prompt_tokens_details") or {}
        self.gateway.settings.record_usage(
            UsageRow(
                time=time.time(),
                key_name=None if self.identity is OPEN else self.identity.name,
                model=self.model,
                deployment=self.replica.deployment,
                prompt_tokens=int(self.usage.get("prompt_tokens") or 0),
                cached_tokens=details.get("cached_tokens"),
                completion_tokens=int(self.usage.get("completion_tokens") or 0),
                status=status,
                latency_ms=elapsed * 1000,
                ttft_ms=(self.first_token_at - self.started) * 1000 if self.first_token_at else None,
            )
        )


def _max_model_len(answer: tuple[int, bytes]) -> int | None:
    """The context length in an engine's /v1/models answer (vLLM lists it per model), if it says."""
    status, payload = answer
    if status != 200:
        return None
    try:
        models = orjson.loads(payload).get("data") or []
        value = models[0].get("max_model_len") if models else None
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return None
    return value if isinstance(value, int) and value > 0 else None


def _usage_of(payload: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return {}
    return document.get("usage") or {} if isinstance(document, dict) else {}


PROXIED_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/tokenize", "/detokenize")


def create_app(settings: GatewaySettings) -> Starlette:
    gateway = Gateway(settings)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # Everything built so far lives as long as the server: keep it out of the collector's full passes,
        # which otherwise freeze the event loop for tens of ms (p99 78 → 23 ms at 32 clients, benchmarks/).
        gc.collect()
        gc.freeze()
        prober = asyncio.create_task(gateway.probe_health())
        try:
            yield
        finally:
            prober.cancel()
            await gateway.close()
            settings.on_shutdown()

    routes = [
        Route("/health", gateway.health, methods=["GET"]),
        Route("/metrics", gateway.metrics_endpoint, methods=["GET"]),
        Route("/v1/models", gateway.list_models, methods=["GET"]),
        *(Route(path, gateway.proxy, methods=["POST"]) for path in PROXIED_PATHS),
        Route("/v1/messages", partial(messages_api.messages, gateway), methods=["POST"]),
        Route("/v1/messages/count_tokens", partial(messages_api.count_tokens, gateway), methods=["POST"]),
    ]
    app = GatewayApp(routes=routes, lifespan=lifespan)
    app.fast_paths = {route.path: route.endpoint for route in routes if route.methods == {"POST"}}
    app.state.gateway = gateway
    return app


class GatewayApp(Starlette):
    """Starlette, with the proxied POSTs dispatched straight to their endpoint.

    Starlette's route matching and its two exception middlewares were a tenth of the gateway's CPU per request
    (benchmarks/gateway_overhead.py); an exact path needs none of it. An unexpected error there is still an
    OpenAI-shaped 500 (Starlette's own would be plain text)."""

    fast_paths: dict[str, Callable[[Request], Awaitable[Response]]]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.fast_paths.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None or scope["method"] != "POST":
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        try:
            response = await endpoint(Request(scope, receive, send))
        except Exception:
            logger.exception("the gateway failed on %s", scope["path"])
            message = "the gateway failed on this request; its log says why"
            anthropic = scope["path"].startswith("/v1/messages")
            response = messages_api.anthropic_error(500, message) if anthropic else error_response(500, message)
        await response(scope, receive, send)
