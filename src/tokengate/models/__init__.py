"""Architecture facts of models (`ModelSpec`) and GPUs (`GpuSpec`)."""

from tokengate.models.gpu import GpuSpec, find_gpu, gpu_catalog
from tokengate.models.source import load_model_spec, model_catalog
from tokengate.models.spec import NAME_FAMILIES, ModelSpec, family_in_name, model_spec_from_config
from tokengate.models.weights import estimated_weight_bytes, weight_bytes

__all__ = [
    "NAME_FAMILIES",
    "GpuSpec",
    "ModelSpec",
    "estimated_weight_bytes",
    "family_in_name",
    "find_gpu",
    "gpu_catalog",
    "load_model_spec",
    "model_catalog",
    "model_spec_from_config",
    "weight_bytes",
]
