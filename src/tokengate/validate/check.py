"""A check: a named function of a probe that decides pass, fail or skip, and whether it applies to a target."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tokengate.validate.probe import Probe
from tokengate.validate.result import Outcome
from tokengate.validate.target import Target


def _always(_target: Target) -> bool:
    return True


@dataclass(frozen=True)
class Check:
    name: str  # group.name, e.g. tools.auto
    run: Callable[[Probe], Outcome]
    applies: Callable[[Target], bool] = _always

    @property
    def group(self) -> str:
        return self.name.partition(".")[0]
