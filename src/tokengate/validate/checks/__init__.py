"""Every check, in the order they run: a later check may use what an earlier one learned."""

from __future__ import annotations

from tokengate.validate.check import Check
from tokengate.validate.checks import chat, limits, liveness, mistral, prefix_cache, reasoning, tools

CHECKS: tuple[Check, ...] = (
    *liveness.CHECKS,
    *chat.CHECKS,
    *reasoning.CHECKS,
    *tools.CHECKS,
    *mistral.CHECKS,
    *prefix_cache.CHECKS,
    *limits.CHECKS,
)
LIVENESS = frozenset(check.name for check in liveness.CHECKS)

__all__ = ["CHECKS", "LIVENESS"]
