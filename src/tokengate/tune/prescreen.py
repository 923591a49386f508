"""Before any launch: ask the planner whether a configuration can start at all.

A configuration whose weights do not fit, whose KV cache cannot hold one
max-length request, or whose tensor-parallel layout is invalid would cost a
full engine boot to fail; the planner predicts these exactly (the KV numbers
are vLLM's own arithmetic), so such a candidate is recorded as infeasible with
the planner's reason and never launched.
"""

from __future__ import annotations

from pydantic import BaseModel

from tokengate.engine.diagnosis import Reason
from tokengate.fleet.schema import Deployment
from tokengate.plan.checks import check_deployment
from tokengate.plan.findings import Finding, Severity
from tokengate.plan.fleet_plan import deployment_for_check

# Findings that mean vLLM refuses to start; others (a missing tool parser, say) do not stop a measurement.
CANNOT_START = frozenset({
    "weights-do-not-fit", "kv-cache-too-small", "tp-gpus", "tp-heads", "tp-kv-heads",
    "max-model-len-limit", "fp8-moe-block", "removed-flag",
})  # fmt: skip


class Prescreen(BaseModel):
    feasible: bool
    reason: Reason | None = None  # the first finding that stops vLLM from starting
    kv_cache_tokens: int | None = None
    max_concurrency: float | None = None
    findings: list[Finding] = []


def prescreen(deployment: Deployment) -> Prescreen:
    """The planner's verdict on one candidate deployment."""
    plan = check_deployment(deployment_for_check(deployment))
    blockers = [f for f in plan.findings if f.severity is Severity.ERROR and f.code in CANNOT_START]
    reason = Reason(code=blockers[0].code, message=blockers[0].message, fix=blockers[0].fix) if blockers else None
    return Prescreen(
        feasible=not blockers,
        reason=reason,
        kv_cache_tokens=plan.kv_cache_tokens,
        max_concurrency=round(plan.max_concurrency, 2),
        findings=plan.findings,
    )
