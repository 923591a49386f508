"""Functional checks of a running endpoint: health, chat, streaming, reasoning, tools, prefix cache, limits."""

from tokengate.validate.check import Check
from tokengate.validate.discovery import ServedModel, served_models
from tokengate.validate.junit import junit_xml, write_junit
from tokengate.validate.result import CheckResult, Outcome, Status, TargetReport, ValidationReport
from tokengate.validate.suite import planned_checks, run_target, validate
from tokengate.validate.target import EngineFacts, Parsers, Target

__all__ = [
    "Check",
    "CheckResult",
    "EngineFacts",
    "Outcome",
    "Parsers",
    "ServedModel",
    "Status",
    "Target",
    "TargetReport",
    "ValidationReport",
    "junit_xml",
    "planned_checks",
    "run_target",
    "served_models",
    "validate",
    "write_junit",
]
