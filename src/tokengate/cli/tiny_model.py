"""`tokengate tiny-model`: random-weight models that real vLLM serves, for smoke tests without downloads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tokengate.cli.output import console, human_bytes, print_json
from tokengate.testing.tiny_model import Family, TinyModel, TinyModelSpec, create_tiny_model, parse_spec

_DEFAULTS = {name: field.default for name, field in TinyModelSpec.model_fields.items()}

app = typer.Typer(
    help="Create tiny random-weight models that vLLM serves offline, to test a pipeline before real weights.",
    no_args_is_help=True,
)


@app.command()
def create(
    directory: Annotated[Path, typer.Argument(help="Directory to write the model into; created if missing.")],
    family: Annotated[Family, typer.Option(help="Architecture, tokenizer and chat template to use.")],
    layers: Annotated[int, typer.Option(help="Decoder layers.")] = _DEFAULTS["layers"],
    hidden: Annotated[int, typer.Option(help="Hidden size.")] = _DEFAULTS["hidden"],
    heads: Annotated[int, typer.Option(help="Attention heads.")] = _DEFAULTS["heads"],
    kv_heads: Annotated[int, typer.Option(help="Key/value heads; divides --heads.")] = _DEFAULTS["kv_heads"],
    head_dim: Annotated[
        int, typer.Option(help="Head size; vLLM's CPU kernel accepts 32, 64, 80, 96, 128 and more.")
    ] = _DEFAULTS["head_dim"],
    vocab: Annotated[
        int | None, typer.Option(help="qwen3 only: BPE vocabulary size, 512-16384; 4096 when left out.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Weight seed; the same seed gives byte-identical files.")] = _DEFAULTS[
        "seed"
    ],
    force: Annotated[bool, typer.Option("--force", help="Overwrite a non-empty directory.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Write config.json, model.safetensors, tokenizer and chat template into DIRECTORY.

    Example: tokengate tiny-model create ./tiny-qwen3 --family qwen3
    """
    spec = parse_spec(
        family=family, layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads,
        head_dim=head_dim, vocab=vocab, seed=seed,
    )  # fmt: skip
    model = create_tiny_model(directory, spec, overwrite=force)
    if json_output:
        print_json(model)
    else:
        _render(model)


def _render(model: TinyModel) -> None:
    spec = model.spec
    table = Table(title=f"tiny {spec.family} model in {model.path}", show_header=False)
    table.add_row(
        "shape",
        f"{spec.layers} layers, hidden {spec.hidden}, {spec.heads} heads "
        f"({spec.kv_heads} kv) x {spec.head_dim}, vocab {spec.vocab_size}",
    )
    table.add_row("files", ", ".join(model.files))
    table.add_row("size", human_bytes(model.size_bytes))
    console.print(table)
    flags = " ".join(model.serve_args)
    console.print(f"Serve it with: vllm serve {model.path} {flags}", highlight=False, soft_wrap=True)
