"""Tiny random-weight models that real vLLM loads offline and serves on a CPU.

They produce random text, but everything around the weights is real: the
architecture, the tokenizer, the chat template, the special tokens that vLLM's
tool and reasoning parsers look for. Users smoke-test a pipeline with them
before downloading real weights; our live tests run vLLM on them.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tokengate.errors import InvalidInputError
from tokengate.testing import tokenizer_files
from tokengate.testing.weights import save_random_weights

# vLLM's CPU attention backend accepts only these head sizes (head_dim 16 fails to start).
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
MANIFEST_NAME = "tokengate-tiny-model.json"
_WRITTEN_FILES = (
    "config.json", "generation_config.json", "model.safetensors", "tekken.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", MANIFEST_NAME,
)  # fmt: skip


class Family(StrEnum):
    QWEN3 = "qwen3"
    MISTRAL = "mistral"


class TinyModelSpec(BaseModel):
    """The shape of a tiny model. Defaults give a model of a few MB that boots in seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: Family
    layers: int = Field(2, ge=1, le=64)
    hidden: int = Field(256, ge=32, le=8192)
    heads: int = Field(4, ge=1, le=128)
    kv_heads: int = Field(2, ge=1, le=128)
    head_dim: int = 64
    intermediate: int = Field(512, ge=16, le=32768)
    vocab: int | None = Field(None, description="qwen3 only: BPE vocabulary size (default 4096)")
    max_position_embeddings: int = Field(32768, ge=256)
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check_shape(self) -> TinyModelSpec:
        if self.heads % self.kv_heads:
            raise ValueError(
                f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads}); "
                "for example --heads 4 --kv-heads 2"
            )
        if self.head_dim not in CPU_HEAD_SIZES:
            raise ValueError(
                f"head_dim {self.head_dim} is not served by vLLM's CPU attention; "
                f"use one of {', '.join(map(str, CPU_HEAD_SIZES))} (default 64)"
            )
        if self.family is Family.MISTRAL and self.vocab not in (None, tokenizer_files.TEKKEN_VOCAB_SIZE):
            raise ValueError(
                f"vocab is fixed at {tokenizer_files.TEKKEN_VOCAB_SIZE} for mistral "
                "(the real tekken tokenizer); leave --vocab out"
            )
        if self.family is Family.QWEN3 and self.vocab is not None:
            tokenizer_files.check_bpe_vocab_size(self.vocab)
        return self

    @property
    def vocab_size(self) -> int:
        if self.family is Family.MISTRAL:
            return tokenizer_files.TEKKEN_VOCAB_SIZE
        return self.vocab or tokenizer_files.DEFAULT_BPE_VOCAB_SIZE

    @property
    def tie_word_embeddings(self) -> bool:
        # Mistral's 131k vocabulary would double the file for nothing.
        return self.family is Family.MISTRAL


class TinyModel(BaseModel):
    """A tiny model written to disk, with the vLLM flags it needs."""

    path: Path
    spec: TinyModelSpec
    files: list[str]
    size_bytes: int

    @property
    def serve_args(self) -> list[str]:
        return serve_args_for(self.spec.family)


def serve_args_for(family: Family) -> list[str]:
    """The vLLM flags that make tool calls and reasoning work for a tiny model of this family."""
    if family is Family.MISTRAL:
        return [
            "--tokenizer-mode", "mistral",
            "--tool-call-parser", "mistral",
            "--enable-auto-tool-choice",
        ]  # fmt: skip
    return [
        "--tool-call-parser", "hermes",
        "--reasoning-parser", "qwen3",
        "--enable-auto-tool-choice",
    ]  # fmt: skip


def parse_spec(**fields: Any) -> TinyModelSpec:
    """Build a spec from user input, turning pydantic's errors into one clear message."""
    try:
        return TinyModelSpec(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            where = ".".join(str(part) for part in error["loc"])
            problems.append(f"{where}: {message}" if where else message)
        raise InvalidInputError("invalid tiny model: " + "; ".join(problems)) from None


def create_tiny_model(directory: Path, spec: TinyModelSpec, *, overwrite: bool = False) -> TinyModel:
    """Write config, weights, tokenizer and chat template; same spec gives byte-identical files."""
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()) and not overwrite:
        raise InvalidInputError(
            f"{directory} exists and is not empty; choose another directory or pass --force to overwrite"
        )
    directory.mkdir(parents=True, exist_ok=True)
    for name in _WRITTEN_FILES:  # a previous model of another family must not leave its tokenizer behind
        (directory / name).unlink(missing_ok=True)
    ids = tokenizer_files.write_tokenizer(directory, spec.family.value, spec.vocab_size)
    _write_json(directory / "config.json", _hf_config(spec, ids))
    _write_json(directory / "generation_config.json", _generation_config(ids))
    save_random_weights(directory / "model.safetensors", spec)
    manifest = {"spec": spec.model_dump(mode="json"), "serve_args": serve_args_for(spec.family)}
    _write_json(directory / MANIFEST_NAME, manifest)
    files = sorted(p.name for p in directory.iterdir())
    size = sum((directory / name).stat().st_size for name in files)
    return TinyModel(path=directory, spec=spec, files=files, size_bytes=size)


def load_tiny_model(directory: Path) -> TinyModel:
    """Read back a tiny model written by `create_tiny_model`."""
    manifest = Path(directory) / MANIFEST_NAME
    if not manifest.is_file():
        raise InvalidInputError(f"{directory} is not a tiny model: {MANIFEST_NAME} is missing")
    spec = TinyModelSpec(**json.loads(manifest.read_text())["spec"])
    files = sorted(p.name for p in Path(directory).iterdir())
    size = sum((Path(directory) / name).stat().st_size for name in files)
    return TinyModel(path=Path(directory), spec=spec, files=files, size_bytes=size)


def _hf_config(spec: TinyModelSpec, ids: tokenizer_files.TokenIds) -> dict[str, Any]:
    common: dict[str, Any] = {
        "hidden_size": spec.hidden,
        "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads,
        "head_dim": spec.head_dim,
        "vocab_size": spec.vocab_size,
        "max_position_embeddings": spec.max_position_embeddings,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": spec.tie_word_embeddings,
        "torch_dtype": "bfloat16",
        "bos_token_id": ids.bos,
        "eos_token_id": ids.eos,
        "initializer_range": 0.02,
        "use_cache": True,
    }
    if spec.family is Family.MISTRAL:
        mistral = {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "sliding_window": None}
        return {**mistral, **common}
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": spec.layers,
        **common,
    }


def _generation_config(ids: tokenizer_files.TokenIds) -> dict[str, Any]:
    eos: int | list[int] = [ids.eos, *ids.extra_eos] if ids.extra_eos else ids.eos
    return {"bos_token_id": ids.bos, "eos_token_id": eos, "do_sample": True}


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
