from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokengate.errors import InvalidInputError
from tokengate.models import find_gpu, gpu_catalog, load_model_spec, model_catalog, weight_bytes
from tokengate.models.spec import model_spec_from_config

SEED_MODELS = (
    "Qwen/Qwen3-1.7B", "Qwen/Qwen3-1.7B-FP8", "Qwen/Qwen3-8B", "Qwen/Qwen3-8B-AWQ", "Qwen/Qwen3-32B",
    "Qwen/Qwen3-32B-AWQ", "Qwen/Qwen2-1.5B-Instruct-AWQ", "Qwen/Qwen2-7B-Instruct-AWQ",
    "mistralai/Devstral-Small-2-24B-Instruct-2512", "meta-llama/Llama-3.1-8B-Instruct",
    "mistralai/Mistral-Small-3.2-24B-Instruct-2506", "Qwen/Qwen3-30B-A3B", "Qwen/Qwen3-Next-80B-A3B-Instruct",
    "openai/gpt-oss-20b", "openai/gpt-oss-120b", "google/gemma-3-27b-it", "deepseek-ai/DeepSeek-V3",
)  # fmt: skip


def test_catalog_bundles_every_model_the_issue_names() -> None:
    ids = {entry.id for entry in model_catalog()}
    assert set(SEED_MODELS) <= ids


@pytest.mark.parametrize("model_id", SEED_MODELS)
def test_every_catalog_model_parses(model_id: str) -> None:
    spec = load_model_spec(model_id)
    assert spec.num_layers == len(spec.layer_kinds)
    assert spec.num_attention_heads % spec.num_kv_heads == 0 or spec.mla
    assert weight_bytes(spec) > 0


@pytest.mark.parametrize(
    ("model_id", "family"),
    [
        ("Qwen/Qwen3-32B-AWQ", "qwen3"),
        ("Qwen/Qwen3-Coder-30B-A3B-Instruct", "qwen3-coder"),
        ("Qwen/Qwen2-1.5B-Instruct-AWQ", "qwen2"),
        ("mistralai/Devstral-Small-2-24B-Instruct-2512", "mistral"),
        ("openai/gpt-oss-20b", "gpt-oss"),
        ("google/gemma-3-27b-it", "gemma"),
        ("deepseek-ai/DeepSeek-V3", "deepseek"),
        ("meta-llama/Llama-3.1-8B-Instruct", "llama"),
    ],
)
def test_family(model_id: str, family: str) -> None:
    assert load_model_spec(model_id).family == family


def test_aliases_and_case_resolve_to_the_same_model() -> None:
    assert load_model_spec("qwen3-32b-awq").id == load_model_spec("QWEN/qwen3-32b-awq").id == "Qwen/Qwen3-32B-AWQ"


def test_nested_text_config_and_yarn() -> None:
    devstral = load_model_spec("mistralai/Devstral-Small-2-24B-Instruct-2512")
    assert (devstral.num_layers, devstral.num_kv_heads, devstral.head_dim) == (40, 8, 128)
    assert devstral.rope_scaling is not None
    assert devstral.rope_scaling.factor == 48
    assert devstral.native_context == 8192
    assert devstral.quantization is not None
    assert devstral.quantization.method == "fp8"


def test_layer_layouts() -> None:
    gpt_oss = load_model_spec("openai/gpt-oss-20b")
    assert gpt_oss.layer_kinds.count("sliding_attention") == 12
    assert gpt_oss.sliding_window == 128
    assert gpt_oss.quantization and gpt_oss.quantization.method == "mxfp4"
    gemma = load_model_spec("google/gemma-3-27b-it")
    assert gemma.count_layers("full_attention") == 10  # every 6th of 62 layers
    assert gemma.vocab_size == 262208  # filled from transformers' defaults
    next_ = load_model_spec("Qwen/Qwen3-Next-80B-A3B-Instruct")
    assert next_.count_layers("linear_attention") == 36
    deepseek = load_model_spec("deepseek-ai/DeepSeek-V3")
    assert deepseek.mla and deepseek.mla.kv_lora_rank == 512
    assert deepseek.moe and deepseek.moe.num_experts == 256
    assert deepseek.quantization and deepseek.quantization.weight_block_size == (128, 128)


def test_qwen_window_that_is_not_used_is_ignored() -> None:
    qwen = load_model_spec("Qwen/Qwen3-8B")
    assert qwen.sliding_window is None
    assert set(qwen.layer_kinds) == {"full_attention"}


def test_head_dim_falls_back_to_hidden_over_heads() -> None:
    config = {"num_hidden_layers": 2, "hidden_size": 512, "num_attention_heads": 8, "model_type": "llama"}
    spec = model_spec_from_config(config, "x")
    assert spec.head_dim == 64
    assert spec.num_kv_heads == 8


def test_estimated_weights_are_close_to_the_published_totals() -> None:
    for model_id in ("Qwen/Qwen3-32B", "Qwen/Qwen3-32B-AWQ", "openai/gpt-oss-20b", "Qwen/Qwen3-30B-A3B"):
        spec = load_model_spec(model_id)
        published = spec.weight_bytes_from_index
        assert published
        estimate = weight_bytes(spec.model_copy(update={"weight_bytes_from_index": None}))
        assert abs(estimate - published) / published < 0.08, model_id


def test_local_dir_reads_config_and_safetensors_index(tmp_path: Path) -> None:
    config = {"num_hidden_layers": 2, "hidden_size": 256, "num_attention_heads": 4, "model_type": "qwen3"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 1234}}))
    spec = load_model_spec(str(tmp_path))
    assert spec.weight_bytes_from_index == 1234
    assert spec.family == "qwen3"


def test_unknown_model_offline_names_the_catalog_and_local_dirs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InvalidInputError, match=r"not in the bundled catalog.*local model directory"):
        load_model_spec("acme/not-a-model")


def test_broken_config_names_the_missing_key(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(InvalidInputError, match="num_hidden_layers"):
        load_model_spec(str(tmp_path))


def test_gpu_catalog_and_lookup() -> None:
    names = {gpu.name for gpu in gpu_catalog()}
    assert {"rtx-3090", "rtx-4090", "rtx-5090", "rtx-a6000", "l40s", "a100-40gb", "a100-80gb", "h100-pcie",
            "h100-sxm", "h200", "b200", "gb10", "mi300x", "cpu"} <= names  # fmt: skip
    assert find_gpu("RTX 3090").memory_bytes == 24576 * 1024 * 1024
    assert find_gpu("rtx-4090").compute_capability_number == 8.9
    assert find_gpu("gb10").unified_memory
    assert (find_gpu("cpu").memory_bytes or 0) > 0
    with pytest.raises(InvalidInputError, match="known: rtx-3090"):
        find_gpu("voodoo-5")
