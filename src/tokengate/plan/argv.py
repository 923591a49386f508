"""A deployment as the exact command line that starts its vLLM server."""

from __future__ import annotations

from tokengate.fleet.engine_args import argv_flags
from tokengate.fleet.schema import VLLM_SERVE, Deployment


def vllm_argv(deployment: Deployment, *, host: str | None = None, port: int | None = None) -> list[str]:
    """`vllm serve MODEL --host … --port … --served-model-name … <engine flags>`.

    Commands other than `vllm serve` (the CPU build's `python -m …api_server`) take the model as `--model`.
    """
    command = list(deployment.command)
    model = ["--model", deployment.model] if tuple(command[-2:]) != VLLM_SERVE else [deployment.model]
    names = deployment.served_model_name or deployment.engine_args.served_model_name
    engine = deployment.engine_args.model_copy(update={"served_model_name": []})
    served = ["--served-model-name", *names] if names else []
    listen = ["--host", host or deployment.host, "--port", str(port or deployment.port)]
    return [*command, *model, *listen, *served, *_without(argv_flags(engine), "--served-model-name")]


def _without(flags: list[str], flag: str) -> list[str]:
    return [item for item in flags if item != flag]
