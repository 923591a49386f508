"""Which models a bare URL serves, for `validate URL` without --model."""

from __future__ import annotations

import httpx
from pydantic import BaseModel

from tokengate.errors import EngineRequestError
from tokengate.validate.endpoint import Endpoint


class ServedModel(BaseModel):
    id: str
    root: str | None = None  # vLLM: the model path or hub id it loaded
    max_model_len: int | None = None


def served_models(
    base_url: str, api_key: str | None = None, *, transport: httpx.BaseTransport | None = None
) -> list[ServedModel]:
    """GET /v1/models; raises EngineRequestError when the server cannot be reached or refuses."""
    try:
        with Endpoint(base_url, api_key, timeout=10.0, transport=transport) as endpoint:
            response = endpoint.get("/v1/models")
    except httpx.HTTPError as exc:
        raise EngineRequestError(f"cannot reach {base_url}: {exc}; is the server running?") from None
    if response.status_code in (401, 403):
        raise EngineRequestError(
            f"{base_url}/v1/models answered {response.status_code}: pass the key with --api-key or TOKENGATE_API_KEY"
        )
    if response.status_code != 200:
        raise EngineRequestError(f"{base_url}/v1/models answered {response.status_code}: {response.text[:200]}")
    try:
        listed = response.json().get("data", [])
    except ValueError:
        raise EngineRequestError(
            f"{base_url}/v1/models did not answer JSON; is this an OpenAI-compatible server?"
        ) from None
    return [ServedModel.model_validate(entry) for entry in listed if isinstance(entry, dict) and "id" in entry]
