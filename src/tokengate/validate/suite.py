"""Run the checks that apply to each target, in order, yielding each result as it is decided."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

import httpx

from tokengate.validate.check import Check
from tokengate.validate.checks import CHECKS, LIVENESS
from tokengate.validate.endpoint import Endpoint
from tokengate.validate.probe import Probe
from tokengate.validate.result import CheckResult, Outcome, Status, TargetReport, ValidationReport
from tokengate.validate.target import Target

OnStart = Callable[[Target, Check], None]
UNREACHABLE_FIX = "is the server running (`tokengate status FILE`)? check the URL and port"


def planned_checks(target: Target) -> list[Check]:
    """The checks that apply to this target, in the order they run."""
    return [check for check in CHECKS if check.applies(target)]


def run_target(
    target: Target,
    *,
    timeout: float = 120.0,
    transport: httpx.BaseTransport | None = None,
    on_start: OnStart | None = None,
) -> Iterator[CheckResult]:
    """Yield one result per planned check; after a failed liveness check the rest are skipped."""
    with Endpoint(target.base_url, target.api_key, timeout=timeout, transport=transport) as endpoint:
        probe = Probe(target=target, endpoint=endpoint, transport=transport, timeout=timeout)
        for check in planned_checks(target):
            if on_start is not None:
                on_start(target, check)
            yield _run_one(check, probe)


def validate(
    targets: Iterable[Target],
    *,
    timeout: float = 120.0,
    transport: httpx.BaseTransport | None = None,
    on_start: OnStart | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
) -> ValidationReport:
    """Every target's results; `on_start`/`on_result` let a caller show progress."""
    report = ValidationReport()
    for target in targets:
        target_report = TargetReport(target=target)
        report.targets.append(target_report)
        for result in run_target(target, timeout=timeout, transport=transport, on_start=on_start):
            target_report.results.append(result)
            if on_result is not None:
                on_result(result)
    return report


def _run_one(check: Check, probe: Probe) -> CheckResult:
    started = time.perf_counter()
    if probe.learned.alive:
        outcome = _outcome(check, probe)
    else:
        outcome = Outcome.skipped("not run: the endpoint failed its liveness checks")
    if check.name in LIVENESS and outcome.status is Status.FAIL:
        probe.learned.alive = False
    return CheckResult(
        **outcome.model_dump(),
        target=probe.target.name,
        check=check.name,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )


def _outcome(check: Check, probe: Probe) -> Outcome:
    try:
        return check.run(probe)
    except httpx.TimeoutException as exc:
        return Outcome.failed(
            f"no answer within {probe.timeout:.0f} s ({type(exc).__name__})",
            "the server is stuck or overloaded: read its log, or raise --timeout",
        )
    except httpx.HTTPError as exc:
        return Outcome.failed(f"cannot reach {probe.endpoint.base_url}: {exc}", UNREACHABLE_FIX)
    except ValueError as exc:  # a body that is not the JSON an OpenAI server sends
        return Outcome.failed(f"unexpected answer: {exc}", "check that the URL points at an OpenAI-compatible server")
