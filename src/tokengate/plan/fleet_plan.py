"""A fleet deployment as what `plan` and `check` look at."""

from __future__ import annotations

from tokengate.fleet.schema import Deployment as FleetDeployment
from tokengate.models import find_gpu, load_model_spec
from tokengate.plan.planner import Deployment


def deployment_for_check(deployment: FleetDeployment) -> Deployment:
    spec = load_model_spec(deployment.model)
    if deployment.family:
        spec = spec.model_copy(update={"family": deployment.family})
    engine = deployment.engine_args
    if deployment.served_model_name:
        engine = engine.model_copy(update={"served_model_name": deployment.served_model_name})
    return Deployment(
        model=spec,
        gpu=find_gpu(deployment.gpu),
        gpu_count=max(len(deployment.gpus), 1),
        engine=engine,
    )
