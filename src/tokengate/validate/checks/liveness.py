"""Liveness: /health answers, /v1/models lists the model, max_model_len is known."""

from __future__ import annotations

from typing import Any

from tokengate.validate.check import Check
from tokengate.validate.probe import Probe
from tokengate.validate.result import Outcome, clip


def health(probe: Probe) -> Outcome:
    response = probe.endpoint.get("/health")
    if response.status_code == 200:
        return Outcome.passed("GET /health answered 200")
    where = f" ({probe.target.deployment})" if probe.target.deployment else ""
    return Outcome.failed(
        f"GET /health answered {response.status_code}: {clip(response.text)}",
        f"the server is up but not ready{where}: read its log (`tokengate logs NAME --fleet FILE`) and restart it",
    )


def models(probe: Probe) -> Outcome:
    response = probe.endpoint.get("/v1/models")
    if response.status_code in (401, 403):
        return Outcome.failed(
            f"GET /v1/models answered {response.status_code}: the API key was refused",
            "pass the key with --api-key or TOKENGATE_API_KEY (gateway keys: `tokengate keys create --name ci "
            "--fleet FILE`)",
        )
    if response.status_code != 200:
        return Outcome.failed(
            f"GET /v1/models answered {response.status_code}: {clip(response.text)}",
            "the server does not speak the OpenAI API at this URL: check the port and path",
        )
    listed: list[dict[str, Any]] = [m for m in response.json().get("data", []) if isinstance(m, dict)]
    names = [str(m.get("id")) for m in listed]
    entry = next((m for m in listed if m.get("id") == probe.target.model), None)
    if entry is None:
        return Outcome.failed(
            f"/v1/models does not list {probe.target.model!r}; it lists: {', '.join(names) or 'nothing'}",
            f"validate one of the listed names (--model), or serve the model as {probe.target.model!r} "
            "(vLLM --served-model-name)",
        )
    _learn_max_model_len(probe, entry)
    learned = probe.learned
    if learned.max_model_len is None:
        return Outcome.passed(f"lists {probe.target.model}; max_model_len not reported", models=names)
    return Outcome.passed(
        f"lists {probe.target.model}; max_model_len {learned.max_model_len} ({learned.max_model_len_source})",
        models=names,
        max_model_len=learned.max_model_len,
    )


def _learn_max_model_len(probe: Probe, entry: dict[str, Any]) -> None:
    """From the listing (vLLM), else /tokenize (passes through the gateway), else the engine args."""
    learned = probe.learned
    if isinstance(entry.get("max_model_len"), int):
        learned.max_model_len, learned.max_model_len_source = entry["max_model_len"], "/v1/models"
        return
    reply = probe.endpoint.post("/tokenize", {"model": probe.target.model, "prompt": "hi"})
    if reply.ok and isinstance(reply.body.get("max_model_len"), int):
        learned.max_model_len, learned.max_model_len_source = reply.body["max_model_len"], "/tokenize"
    elif probe.target.engine and probe.target.engine.max_model_len:
        learned.max_model_len, learned.max_model_len_source = probe.target.engine.max_model_len, "engine args"


CHECKS = (Check("liveness.health", health), Check("liveness.models", models))
