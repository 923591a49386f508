"""OpenAI-shaped error bodies, before the first byte (a status) or inside a stream (an event)."""

from __future__ import annotations

import orjson
from starlette.responses import Response

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable",
}


def error_body(status: int, message: str, *, code: str | None = None, param: str | None = None) -> bytes:
    error = {"message": message, "type": _TYPES.get(status, "api_error"), "param": param, "code": code or status}
    return orjson.dumps({"error": error})


def error_response(
    status: int, message: str, *, code: str | None = None, param: str | None = None, retry_after: int | None = None
) -> Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return Response(
        error_body(status, message, code=code, param=param),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def stream_error_event(message: str) -> bytes:
    """What a client reads when the upstream fails after the stream has started; the stream then ends."""
    return b"data: " + error_body(502, message, code="upstream_stream_error") + b"\n\n"
