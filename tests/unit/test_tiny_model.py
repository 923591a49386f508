from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from tokengate.errors import InvalidInputError
from tokengate.testing.tiny_model import Family, create_tiny_model, load_tiny_model, parse_spec
from tokengate.testing.tokenizer_files import SPECIAL_TOKENS, VISIBLE_CONTROL_TOKENS
from tokengate.testing.weights import random_weights


def read_all(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"heads": 4, "kv_heads": 3}, "must be a multiple of kv_heads"),
        ({"head_dim": 16}, "head_dim 16 is not served by vLLM's CPU attention"),
        ({"layers": 0}, "layers: Input should be greater than or equal to 1"),
        ({"vocab": 100}, "vocab 100 is out of range"),
    ],
)
def test_bad_shapes_name_the_field_and_the_fix(fields: dict[str, int], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_spec(family="qwen3", **fields)


def test_mistral_vocab_is_fixed_by_tekken() -> None:
    with pytest.raises(InvalidInputError, match="vocab is fixed at 131072 for mistral"):
        parse_spec(family="mistral", vocab=4096)


def test_unknown_family_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match="family"):
        parse_spec(family="llama")


def test_qwen3_files_config_and_tokenizer(tmp_path: Path) -> None:
    model = create_tiny_model(tmp_path / "m", parse_spec(family="qwen3", vocab=1024))
    config = json.loads((model.path / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"]
    assert config["head_dim"] == 64
    assert config["vocab_size"] == 1024
    tokenizer = Tokenizer.from_file(str(model.path / "tokenizer.json"))
    assert tokenizer.get_vocab_size() == 1024
    for token in (*SPECIAL_TOKENS, *VISIBLE_CONTROL_TOKENS):
        assert len(tokenizer.encode(token).ids) == 1, token
    assert config["eos_token_id"] == tokenizer.token_to_id("<|im_end|>")
    text = 'Hello <tool_call>{"name": "x"}</tool_call> é'
    assert tokenizer.decode(tokenizer.encode(text).ids, skip_special_tokens=False) == text
    template = json.loads((model.path / "tokenizer_config.json").read_text())["chat_template"]
    assert "<tool_call>" in template


def test_weights_match_the_architecture(tmp_path: Path) -> None:
    qwen = parse_spec(family="qwen3", layers=1)
    mistral = parse_spec(family="mistral", layers=1, hidden=64, heads=2, kv_heads=1, intermediate=64)
    qwen_names = set(random_weights(qwen))
    mistral_tensors = random_weights(mistral)
    assert "model.layers.0.self_attn.q_norm.weight" in qwen_names
    assert "lm_head.weight" in qwen_names
    assert "model.layers.0.self_attn.q_norm.weight" not in mistral_tensors
    assert "lm_head.weight" not in mistral_tensors  # tied to the embeddings
    assert mistral_tensors["model.embed_tokens.weight"].shape == (131072, 64)
    assert mistral_tensors["model.layers.0.self_attn.k_proj.weight"].shape == (64, 64)


def test_mistral_ships_the_real_tekken(tmp_path: Path) -> None:
    spec = parse_spec(family=Family.MISTRAL, layers=1, hidden=64, heads=2, kv_heads=1, intermediate=64)
    model = create_tiny_model(tmp_path / "m", spec)
    tekken = json.loads((model.path / "tekken.json").read_text())
    assert tekken["config"]["default_vocab_size"] == 131072
    assert "tokenizer.json" not in model.files
    assert model.serve_args[:2] == ["--tokenizer-mode", "mistral"]


def test_same_seed_is_byte_identical_across_processes(tmp_path: Path) -> None:
    create_tiny_model(tmp_path / "here", parse_spec(family="qwen3", seed=7))
    subprocess.run(
        [sys.executable, "-m", "tokengate", "tiny-model", "create", str(tmp_path / "there"),
         "--family", "qwen3", "--seed", "7"],
        check=True, capture_output=True,
    )  # fmt: skip
    assert read_all(tmp_path / "here") == read_all(tmp_path / "there")


def test_another_seed_changes_only_the_weights(tmp_path: Path) -> None:
    a = create_tiny_model(tmp_path / "a", parse_spec(family="qwen3", seed=1)).path
    b = create_tiny_model(tmp_path / "b", parse_spec(family="qwen3", seed=2)).path
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert not (wa["model.embed_tokens.weight"] == wb["model.embed_tokens.weight"]).all()


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    target = tmp_path / "m"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(InvalidInputError, match="--force"):
        create_tiny_model(target, parse_spec(family="qwen3"))
    assert (target / "notes.txt").read_text() == "mine"


def test_force_replaces_another_family_cleanly(tmp_path: Path) -> None:
    small_mistral = parse_spec(family="mistral", layers=1, hidden=64, heads=2, kv_heads=1, intermediate=64)
    create_tiny_model(tmp_path / "m", small_mistral)
    model = create_tiny_model(tmp_path / "m", parse_spec(family="qwen3"), overwrite=True)
    assert "tekken.json" not in model.files
    assert load_tiny_model(tmp_path / "m").spec.family is Family.QWEN3
