"""A fleet as files that start it elsewhere: a compose project, Kubernetes manifests, or a script of `vllm serve`.

Secrets never get a value here: compose and the script keep the fleet's `${VAR}` references, Kubernetes reads
them from Secrets named after the variable. External deployments (`url:`) run somewhere else and are not rendered.
"""

from tokengate.plan.render.compose import render_compose
from tokengate.plan.render.kubernetes import k8s_name, render_kubernetes, secret_name
from tokengate.plan.render.script import launch_line, render_vllm
from tokengate.plan.render.shared import (
    STARTUP_MAX_SECONDS,
    STARTUP_UNKNOWN_SECONDS,
    RenderedFiles,
    startup_seconds,
)

__all__ = [
    "STARTUP_MAX_SECONDS",
    "STARTUP_UNKNOWN_SECONDS",
    "RenderedFiles",
    "k8s_name",
    "launch_line",
    "render_compose",
    "render_kubernetes",
    "render_vllm",
    "secret_name",
    "startup_seconds",
]
