"""JUnit XML for CI systems: one <testsuite> per target, one <testcase> per check."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from tokengate.validate.result import Status, TargetReport, ValidationReport


def junit_xml(report: ValidationReport) -> str:
    root = ET.Element(
        "testsuites",
        name="tokengate validate",
        tests=str(len(report.results)),
        failures=str(report.failed),
        skipped=str(report.skipped),
        time=_seconds(sum(r.duration_ms for r in report.results)),
    )
    for target_report in report.targets:
        root.append(_suite(target_report))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(report: ValidationReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(junit_xml(report), encoding="utf-8")


def _suite(report: TargetReport) -> ET.Element:
    target = report.target
    suite = ET.Element(
        "testsuite",
        name=target.name,
        tests=str(len(report.results)),
        failures=str(report.count(Status.FAIL)),
        errors="0",
        skipped=str(report.count(Status.SKIP)),
        time=_seconds(sum(r.duration_ms for r in report.results)),
    )
    properties = ET.SubElement(suite, "properties")
    for name, value in (
        ("base_url", target.base_url),
        ("model", target.model),
        ("family", target.family or ""),
        ("via_gateway", str(target.via_gateway).lower()),
    ):
        ET.SubElement(properties, "property", name=name, value=value)
    for result in report.results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"{target.name}.{result.check.partition('.')[0]}",
            name=result.check,
            time=_seconds(result.duration_ms),
        )
        if result.status is Status.FAIL:
            ET.SubElement(case, "failure", message=result.reason, type="ValidationFailure").text = f"fix: {result.fix}"
        elif result.status is Status.SKIP:
            ET.SubElement(case, "skipped", message=result.reason)
        if result.evidence:
            ET.SubElement(case, "system-out").text = json.dumps(result.evidence, sort_keys=True)
    return suite


def _seconds(ms: float) -> str:
    return f"{ms / 1000:.3f}"
