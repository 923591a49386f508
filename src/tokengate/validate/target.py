"""What to validate: an endpoint, a model on it, and what its engine arguments promise (when known)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# Families whose chat template takes `chat_template_kwargs: {"enable_thinking": false}`.
THINKING_SWITCH_FAMILIES = frozenset({"qwen3"})


class EngineFacts(BaseModel):
    """How the engine was started, read from the fleet's engine args. Absent when only a URL is known."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reasoning_parser: str | None = None
    tool_call_parser: str | None = None
    auto_tool_choice: bool = False
    prefix_caching: bool = True  # vLLM's default
    prompt_tokens_details: bool = False
    max_model_len: int | None = None


class Parsers(BaseModel):
    """The parsers a model family needs, to name them in fixes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tool_call_parser: str | None = None
    reasoning_parser: str | None = None


class Target(BaseModel):
    """One model behind one OpenAI-compatible endpoint (an engine or the gateway)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="What the report calls it: the deployment name, else the model.")
    base_url: str = Field(description="Server root without /v1, e.g. http://127.0.0.1:8000.")
    model: str
    api_key: str | None = Field(None, exclude=True, repr=False)
    family: str | None = None
    via_gateway: bool = False
    engine_url: str | None = Field(None, description="The engine behind the gateway, for its /metrics.")
    deployment: str | None = Field(None, description="Fleet deployment, named in fixes.")
    engine: EngineFacts | None = Field(None, description="Engine args when known; None: probe.")
    recommended: Parsers = Field(default_factory=Parsers)

    @property
    def takes_thinking_switch(self) -> bool:
        return self.family in THINKING_SWITCH_FAMILIES

    @property
    def metrics_url(self) -> str:
        """Where vLLM's /metrics lives: the engine itself, or the engine behind the gateway."""
        return (self.engine_url or self.base_url) if self.via_gateway else self.base_url
