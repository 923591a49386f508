"""The JUnit XML reads back with a real JUnit parser: suites per target, failures with their fix, skips."""

from __future__ import annotations

from pathlib import Path

from junitparser import Failure, JUnitXml, Skipped, TestSuite

from tokengate.validate import CheckResult, Status, Target, TargetReport, ValidationReport, write_junit


def result(check: str, status: Status, reason: str, fix: str = "") -> CheckResult:
    return CheckResult(
        target="medium",
        check=check,
        status=status,
        reason=reason,
        fix=fix,
        duration_ms=1500.0,
        evidence={"hit_tokens": 0} if check.startswith("prefix") else {},
    )


def test_junit_round_trip(tmp_path: Path) -> None:
    target = Target(name="medium", base_url="http://127.0.0.1:5002", model="qwen3-32b", api_key="secret")
    report = ValidationReport(
        targets=[
            TargetReport(
                target=target,
                results=[
                    result("liveness.health", Status.PASS, "GET /health answered 200"),
                    result(
                        "tools.auto",
                        Status.FAIL,
                        'tool_choice "auto" answered 400 <&>',
                        "start vLLM with --enable-auto-tool-choice",
                    ),
                    result("prefix_cache.hit", Status.SKIP, "no evidence"),
                ],
            )
        ]
    )
    path = tmp_path / "reports" / "validate.xml"
    write_junit(report, path)

    document = JUnitXml.fromfile(str(path))
    suites = list(document) if isinstance(document, JUnitXml) else [document]
    assert len(suites) == 1
    suite: TestSuite = suites[0]
    assert (suite.name, suite.tests, suite.failures, suite.skipped) == ("medium", 3, 1, 1)
    cases = {case.name: case for case in suite}
    assert set(cases) == {"liveness.health", "tools.auto", "prefix_cache.hit"}
    assert cases["liveness.health"].is_passed
    failure = cases["tools.auto"].result[0]
    assert isinstance(failure, Failure)
    assert failure.message == 'tool_choice "auto" answered 400 <&>'
    assert failure.text == "fix: start vLLM with --enable-auto-tool-choice"
    assert isinstance(cases["prefix_cache.hit"].result[0], Skipped)
    assert cases["prefix_cache.hit"].system_out == '{"hit_tokens": 0}'
    assert cases["tools.auto"].classname == "medium.tools"
    assert cases["tools.auto"].time == 1.5
    assert "secret" not in path.read_text()
