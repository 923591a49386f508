"""`GpuSpec`: the devices we plan for, from a bundled table of facts."""

from __future__ import annotations

import json
import os
from functools import cache
from importlib import resources

from pydantic import BaseModel, ConfigDict

from tokengate.errors import InvalidInputError


class GpuSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    display_name: str
    aliases: tuple[str, ...] = ()
    vendor: str
    memory_bytes: int | None  # None for the CPU entry: read from the host
    unified_memory: bool = False
    memory_bandwidth_gbps: float
    bf16_tflops: float
    fp8: bool
    compute_capability: str | None
    interconnect: str = ""
    notes: str = ""

    @property
    def compute_capability_number(self) -> float | None:
        """NVIDIA compute capability as a number (8.9), None for AMD and the CPU."""
        if self.vendor != "nvidia" or not self.compute_capability:
            return None
        return float(self.compute_capability)

    @property
    def is_cpu(self) -> bool:
        return self.vendor == "cpu"


@cache
def gpu_catalog() -> tuple[GpuSpec, ...]:
    text = (resources.files("tokengate.models") / "catalog" / "gpus.json").read_text()
    return tuple(GpuSpec(**entry) for entry in json.loads(text))


def find_gpu(name: str) -> GpuSpec:
    """Look a device up by id or alias, case and punctuation insensitive ("RTX 3090", "rtx-3090", "3090")."""
    wanted = _normalise(name)
    for gpu in gpu_catalog():
        if wanted in {_normalise(gpu.name), _normalise(gpu.display_name), *map(_normalise, gpu.aliases)}:
            return gpu.model_copy(update={"memory_bytes": _host_memory_bytes()}) if gpu.is_cpu else gpu
    known = ", ".join(gpu.name for gpu in gpu_catalog())
    raise InvalidInputError(f"unknown GPU {name!r}; known: {known}")


def _normalise(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _host_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
