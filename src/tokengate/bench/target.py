"""What a benchmark talks to: an OpenAI-compatible server root (an engine or the gateway) and a model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tokengate.errors import InvalidInputError


class BenchTarget(BaseModel):
    """`base_url` is the server root (http://host:port), without /v1. `metrics_url` is the engine root whose
    /metrics to scrape (default: `base_url`; set it to the engine when `base_url` is a gateway)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str
    model: str
    api_key: str | None = Field(default=None, exclude=True, repr=False)  # never written to a results file
    metrics_url: str | None = None

    @field_validator("base_url", "metrics_url")
    @classmethod
    def _root_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = value.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise InvalidInputError(f"target URL {value!r} must start with http:// or https://")
        return url.removesuffix("/v1")

    @field_validator("model")
    @classmethod
    def _model_named(cls, value: str) -> str:
        if not value.strip():
            raise InvalidInputError("the target needs a model name: pass --model NAME (see GET /v1/models)")
        return value

    @property
    def scrape_url(self) -> str:
        return self.metrics_url or self.base_url

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
