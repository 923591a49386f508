"""The planner's pre-screen: configurations that cannot start are named with the planner's reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_tune_support import make_tiny_model
from tokengate.fleet.schema import Deployment
from tokengate.tune.prescreen import prescreen

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model"))


def cpu(model: Path, **engine_args: object) -> Deployment:
    args = {"max-model-len": 4096, "enforce-eager": True, "kv-cache-memory-bytes": 64 * MIB, **engine_args}
    return Deployment(name="t", model=str(model), gpu="cpu", port=8000, engine_args=args)


def test_a_configuration_that_fits_is_feasible_with_its_kv_numbers(model: Path) -> None:
    verdict = prescreen(cpu(model))
    assert verdict.feasible and verdict.reason is None
    assert verdict.kv_cache_tokens and verdict.kv_cache_tokens >= 4096
    assert verdict.max_concurrency and verdict.max_concurrency >= 1


def test_kv_that_cannot_hold_one_request_is_infeasible_with_the_fix(model: Path) -> None:
    verdict = prescreen(cpu(model, **{"kv-cache-memory-bytes": 2 * MIB}))
    assert not verdict.feasible
    assert verdict.reason is not None
    assert verdict.reason.code == "kv-cache-too-small"
    assert "4096" in verdict.reason.message
    assert verdict.reason.fix.startswith("--max-model-len ")


def test_an_invalid_tensor_parallel_layout_is_infeasible(model: Path) -> None:
    deployment = cpu(model, **{"tensor-parallel-size": 3}).model_copy(update={"gpus": [0, 1, 2]})
    verdict = prescreen(deployment)
    assert not verdict.feasible
    assert verdict.reason is not None and verdict.reason.code == "tp-heads"


def test_weights_that_do_not_fit_are_infeasible() -> None:
    deployment = Deployment(name="big", model="Qwen/Qwen3-32B", gpu="rtx-3090", gpus=[0], port=8000)
    verdict = prescreen(deployment)
    assert not verdict.feasible
    assert verdict.reason is not None and verdict.reason.code == "weights-do-not-fit"


def test_findings_that_do_not_stop_vllm_do_not_make_it_infeasible(model: Path) -> None:
    verdict = prescreen(cpu(model, **{"reasoning-parser": "qwen3"}))  # no tool parser for qwen3: a finding, not fatal
    assert verdict.feasible
