"""What validation found: one result per check, grouped per target."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field

from tokengate.validate.target import Target


def clip(text: str, limit: int = 200) -> str:
    """Shorten a server's message for a one-line reason."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def first_sentence(text: str, limit: int = 120) -> str:
    """The first sentence of a server's message, for a one-line reason."""
    head, dot, _ = " ".join(text.split()).partition(". ")
    return clip(head + (dot.strip() if dot else ""), limit)


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"


class Outcome(BaseModel):
    """What one check decided: the status, what it saw, what to change."""

    model_config = ConfigDict(extra="forbid")

    status: Status
    reason: str
    fix: str = ""
    evidence: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def passed(cls, reason: str, **evidence: Any) -> Outcome:
        return cls(status=Status.PASS, reason=reason, evidence=evidence)

    @classmethod
    def failed(cls, reason: str, fix: str, **evidence: Any) -> Outcome:
        return cls(status=Status.FAIL, reason=reason, fix=fix, evidence=evidence)

    @classmethod
    def skipped(cls, reason: str, fix: str = "", **evidence: Any) -> Outcome:
        return cls(status=Status.SKIP, reason=reason, fix=fix, evidence=evidence)


class CheckResult(Outcome):
    target: str
    check: str
    duration_ms: float


class TargetReport(BaseModel):
    target: Target
    results: list[CheckResult] = Field(default_factory=list)

    def count(self, status: Status) -> int:
        return sum(result.status is status for result in self.results)


class ValidationReport(BaseModel):
    targets: list[TargetReport] = Field(default_factory=list)

    @property
    def results(self) -> list[CheckResult]:
        return [result for report in self.targets for result in report.results]

    def count(self, status: Status) -> int:
        return sum(report.count(status) for report in self.targets)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passed(self) -> int:
        return self.count(Status.PASS)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def failed(self) -> int:
        return self.count(Status.FAIL)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def skipped(self) -> int:
        return self.count(Status.SKIP)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return self.failed == 0
