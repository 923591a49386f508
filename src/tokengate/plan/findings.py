"""A finding: something wrong or missing in a deployment, with the exact fix."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel


class Severity(StrEnum):
    ERROR = "error"  # vLLM will refuse to start, or the feature will not work
    WARNING = "warning"  # it starts, but slower, smaller or riskier than it could be
    INFO = "info"


class Finding(BaseModel):
    code: str
    severity: Severity
    message: str
    fix: str


def has_errors(findings: list[Finding]) -> bool:
    return any(finding.severity is Severity.ERROR for finding in findings)
