"""`tokengate gateway`: the OpenAI- and Anthropic-compatible front for the fleet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tokengate.fleet.loader import load_fleet
from tokengate.gateway.server import serve


def gateway(
    fleet_file: Annotated[Path, typer.Argument(help="The fleet file.")] = Path("fleet.yaml"),
    host: Annotated[str | None, typer.Option(help="Listen address [default: the fleet's gateway.listen].")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Listen port.")] = None,
) -> None:
    """Serve the fleet's OpenAI and Anthropic APIs: chat, completions, messages, models, embeddings, metrics.

    OpenAI: /v1/chat/completions, /v1/completions, /v1/models, /v1/embeddings, /tokenize. Anthropic:
    /v1/messages, /v1/messages/count_tokens. Also /health and Prometheus /metrics.

    Routes by `model` to the deployment that serves it, repairs requests per family, checks keys and quotas,
    and writes one ledger row per request. Keys: `tokengate keys create`. Runs until Ctrl-C or SIGTERM.
    """
    serve(load_fleet(fleet_file), fleet_file, host=host, port=port)
