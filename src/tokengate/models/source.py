"""Where a `ModelSpec` comes from: a local dir or file, the bundled catalog, or the hub when online."""

from __future__ import annotations

import json
import os
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tokengate.errors import InvalidInputError
from tokengate.models.spec import ModelSpec, model_spec_from_config


class CatalogEntry(BaseModel):
    id: str
    aliases: tuple[str, ...] = ()
    weight_bytes: int | None = None
    config: dict[str, Any]
    notes: str = ""


@cache
def model_catalog() -> tuple[CatalogEntry, ...]:
    folder = resources.files("tokengate.models") / "catalog" / "models"
    entries = [CatalogEntry(**json.loads(item.read_text())) for item in folder.iterdir() if item.name.endswith(".json")]
    return tuple(sorted(entries, key=lambda entry: entry.id.lower()))


def load_model_spec(reference: str) -> ModelSpec:
    """Resolve a model id or path, in order: local path, bundled catalog, Hugging Face hub."""
    path = Path(reference).expanduser()
    if path.exists():
        return _from_local(path)
    entry = _catalog_entry(reference)
    if entry is not None:
        return model_spec_from_config(entry.config, entry.id, weight_bytes=entry.weight_bytes)
    return _from_hub(reference)


def _from_local(path: Path) -> ModelSpec:
    config_path = path / "config.json" if path.is_dir() else path
    if not config_path.is_file():
        raise InvalidInputError(f"{path} has no config.json; pass a model directory or its config.json")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{config_path} is not valid JSON: {exc}") from None
    return model_spec_from_config(config, str(path), weight_bytes=_local_weight_bytes(config_path.parent))


def _local_weight_bytes(directory: Path) -> int | None:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        total = json.loads(index.read_text()).get("metadata", {}).get("total_size")
        if total:
            return int(total)
    shards = list(directory.glob("*.safetensors"))
    return sum(shard.stat().st_size for shard in shards) if shards else None


def _catalog_entry(reference: str) -> CatalogEntry | None:
    wanted = reference.lower().strip()
    for entry in model_catalog():
        names = {entry.id.lower(), entry.id.lower().split("/")[-1], *(alias.lower() for alias in entry.aliases)}
        if wanted in names:
            return entry
    return None


def _from_hub(reference: str) -> ModelSpec:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    hint = (
        f"{reference!r} is not a local path and not in the bundled catalog "
        f"(`tokengate models` lists it); pass a local model directory or its config.json"
    )
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise InvalidInputError(hint + ", or `pip install huggingface_hub` to read it from the hub") from None
    if offline:
        raise InvalidInputError(hint + " (HF_HUB_OFFLINE=1, so the hub is not asked)")
    try:
        config_file = hf_hub_download(reference, "config.json")
    except Exception as exc:  # the hub client raises many types: offline, gated, missing
        raise InvalidInputError(f"{hint}; the hub could not be read either: {type(exc).__name__}") from None
    config = json.loads(Path(config_file).read_text())
    return model_spec_from_config(config, reference, weight_bytes=None)
