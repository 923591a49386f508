"""The search: which configuration next (grid, or optuna's TPE over the results so far), run it, store it.

`next_tpe_candidate(space, history)` is a pure step: it rebuilds an in-memory
optuna study from the stored trials each time, so resuming needs nothing but
the store. Every candidate is pre-screened by the planner before it may launch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import optuna
from pydantic import BaseModel, Field

from tokengate.tune.champion import ConfigResult, Decision, config_result, decide
from tokengate.tune.prescreen import Prescreen, prescreen
from tokengate.tune.space import Candidate, Goal, Range, SearchSpace, Strategy
from tokengate.tune.store import Recovered, TrialJournalWriter, TuneStore, open_store
from tokengate.tune.trial import (
    EngineProcess,
    Phase,
    TrialRecord,
    TrialSettings,
    TrialStatus,
    Workload,
    run_trial,
)

TPE_PROPOSALS = 5  # TPE proposals that may repeat a tried configuration before a random draw takes over
MAX_PROPOSALS = 500  # random draws before the space counts as exhausted

EventKind = Literal["recovered", "infeasible", "trial-start", "phase", "trial-end", "done"]


class TuneEvent(BaseModel):
    """Progress, for a progress bar: `done` of `total` launches, and an ETA from the trials timed so far."""

    kind: EventKind
    number: int | None = None
    label: str = ""
    phase: Phase | None = None
    detail: str = ""
    status: TrialStatus | None = None
    message: str = ""
    done: int = 0
    total: int | None = None
    eta_seconds: float | None = None


class SearchResult(BaseModel):
    space: SearchSpace
    trials: list[TrialRecord]
    results: list[ConfigResult]
    decision: Decision
    recovered: list[Recovered] = Field(default_factory=list)
    store_path: Path


OnEvent = Callable[[TuneEvent], None]


def run_search(
    space: SearchSpace,
    *,
    resume: bool = False,
    workload: Workload | None = None,
    on_event: OnEvent | None = None,
) -> SearchResult:
    """Run (or continue) the search the space describes; every trial is in the store as soon as it changes."""
    if workload is None:
        from tokengate.tune.workload import bench_workload

        workload = bench_workload(space.workload)
    store = open_store(space, resume=resume)
    try:
        return _Search(space, store, workload, on_event or (lambda _event: None)).run()
    finally:
        store.close()


def load_result(space: SearchSpace) -> SearchResult:
    """The stored search as a result, without running anything (to re-render a report)."""
    store = open_store(space, resume=True)
    try:
        return _result(space, store, [])
    finally:
        store.close()


def _result(space: SearchSpace, store: TuneStore, recovered: list[Recovered]) -> SearchResult:
    trials = store.trials()
    results = [config_result(space, trial) for trial in trials]
    return SearchResult(
        space=space, trials=trials, results=results, decision=decide(space, results), recovered=recovered,
        store_path=store.path,
    )  # fmt: skip


class _Search:
    def __init__(self, space: SearchSpace, store: TuneStore, workload: Workload, emit: OnEvent) -> None:
        self.space = space
        self.store = store
        self.workload = workload
        self.emit = emit
        assert space.state_dir is not None
        self.settings = TrialSettings(
            repeats=space.repeats,
            warmup_requests=space.workload.warmup_requests,
            logs_dir=Path(space.state_dir) / "logs",
        )
        self.durations: list[float] = []
        self._verdicts: dict[str, Prescreen] = {}
        self._planned: list[Candidate] = []

    def run(self) -> SearchResult:
        recovered = self.store.recover()
        for item in recovered:
            note = "its engine was still running and is stopped" if item.engine_was_running else "its engine is gone"
            self.emit(TuneEvent(kind="recovered", number=item.number, label=item.label, message=note))
        candidates = self._grid() if self.space.search.strategy is Strategy.GRID else self._tpe()
        for candidate in candidates:
            self._trial(candidate)
        self.emit(TuneEvent(kind="done", done=self._launched(), total=self._total()))
        return _result(self.space, self.store, recovered)

    # -- which configurations -------------------------------------------------------------------------------

    def _grid(self) -> Iterator[Candidate]:
        """Pre-screen the whole grid first (it is free), so the progress bar counts only real launches."""
        grid = self.space.grid()
        for candidate in grid:  # numbered in grid order, so the store shows the whole plan
            if self.store.by_key(candidate.key) is None:
                self.store.save(TrialRecord(number=self.store.next_number(), candidate=candidate,
                                            status=TrialStatus.PENDING))  # fmt: skip
        grid = [c for c in grid if self._screen(c) is not None]
        self._planned = [c for c in grid if not _finished(self.store.by_key(c.key))][: self._budget_left()]
        yield from self._planned

    def _tpe(self) -> Iterator[Candidate]:
        for record in self.store.trials():  # interrupted first: they were already chosen
            if record.status is TrialStatus.INTERRUPTED and self._budget_left() > 0:
                yield record.candidate
        while self._budget_left() > 0:
            candidate = next_tpe_candidate(self.space, self.store.trials())
            if candidate is None:
                return
            if self._screen(candidate) is not None:
                yield candidate

    def _budget_left(self) -> int:
        budget = self.space.search.budget
        return 10**9 if budget is None else budget - self._launched()

    def _launched(self) -> int:
        return sum(1 for t in self.store.trials() if t.attempts > 0 and t.status.finished)

    def _total(self) -> int | None:
        if self.space.search.strategy is Strategy.TPE:
            return self.space.search.budget
        return self._launched() + len([c for c in self._planned if not _finished(self.store.by_key(c.key))])

    # -- one configuration ----------------------------------------------------------------------------------

    def _screen(self, candidate: Candidate) -> Prescreen | None:
        """The planner's verdict; an infeasible candidate is recorded (never launched) and None returned."""
        existing = self.store.by_key(candidate.key)
        verdict = existing.prescreen if existing is not None and existing.prescreen is not None else None
        if verdict is None:
            verdict = self._verdicts.get(candidate.key) or prescreen(self.space.deployment(candidate))
            self._verdicts[candidate.key] = verdict
        if verdict.feasible:
            return verdict
        if existing is None or existing.status is not TrialStatus.INFEASIBLE:
            number = existing.number if existing else self.store.next_number()
            self.store.save(
                TrialRecord(number=number, candidate=candidate, status=TrialStatus.INFEASIBLE, reason=verdict.reason,
                            prescreen=verdict, finished_at=time.time())
            )  # fmt: skip
            message = f"{verdict.reason.message} (fix: {verdict.reason.fix})" if verdict.reason else ""
            self.emit(TuneEvent(kind="infeasible", number=number, label=candidate.label, message=message))
        return None

    def _trial(self, candidate: Candidate) -> None:
        existing = self.store.by_key(candidate.key)
        verdict = None if _finished(existing) else self._screen(candidate)
        if verdict is None:
            return
        record = TrialRecord(
            number=existing.number if existing else self.store.next_number(),
            candidate=candidate,
            attempts=(existing.attempts if existing else 0) + 1,
            prescreen=verdict,
            started_at=time.time(),
        )
        self.store.save(record)
        self.emit(self._event("trial-start", record))
        notify = lambda update: self.emit(self._event("phase", record, update))  # noqa: E731
        journal = _ProgressJournal(self.store.journal(record.number), notify)
        try:
            outcome = run_trial(self.space.deployment(candidate), record.number, self.settings, self.workload, journal)
        except BaseException:
            stored = self.store.trial(record.number) or record
            self.store.save(stored.model_copy(update={"status": TrialStatus.INTERRUPTED, "phase": None}))
            raise
        stored = self.store.trial(record.number) or record
        finished_at = time.time()
        finished = stored.model_copy(
            update={"status": outcome.status, "reason": outcome.reason, "boot_seconds": outcome.boot_seconds,
                    "measurements": outcome.measurements, "engine_metrics": outcome.engine_metrics,
                    "phase": None, "finished_at": finished_at}
        )  # fmt: skip
        self.store.save(finished)
        self.durations.append(finished_at - (record.started_at or finished_at))
        self.emit(self._event("trial-end", finished))

    def _event(self, kind: EventKind, record: TrialRecord, phase: tuple[Phase, str] | None = None) -> TuneEvent:
        done, total = self._launched(), self._total()
        return TuneEvent(
            kind=kind, number=record.number, label=record.candidate.label, status=record.status,
            phase=phase[0] if phase else None, detail=phase[1] if phase else "",
            message=record.reason.message if record.reason else "", done=done, total=total,
            eta_seconds=self._eta(done, total, None if kind == "trial-end" else record.started_at),
        )  # fmt: skip

    def _eta(self, done: int, total: int | None, current_started_at: float | None) -> float | None:
        """Mean trial time so far x trials left, minus what the current one has already taken."""
        if not self.durations or total is None:
            return None
        mean = sum(self.durations) / len(self.durations)
        if current_started_at is None:
            return mean * max(total - done, 0)
        return mean * max(total - done - 1, 0) + max(mean - (time.time() - current_started_at), 0.0)


class _ProgressJournal:
    """Writes to the store, then tells the progress bar."""

    def __init__(self, journal: TrialJournalWriter, notify: Callable[[tuple[Phase, str]], None]) -> None:
        self._journal = journal
        self._notify = notify

    def engine_started(self, engine: EngineProcess) -> None:
        self._journal.engine_started(engine)
        self._notify((Phase.STARTING, f"pid {engine.pgid}"))

    def phase(self, phase: Phase, detail: str = "") -> None:
        self._journal.phase(phase, detail)
        self._notify((phase, detail))


def _finished(record: TrialRecord | None) -> bool:
    return record is not None and record.status.finished


# -- TPE ------------------------------------------------------------------------------------------------------


def next_tpe_candidate(space: SearchSpace, history: list[TrialRecord]) -> Candidate | None:
    """A configuration not tried yet, suggested by TPE from the finished trials; None when none is left.

    TPE picks the best of its own samples, so in a small discrete space it keeps proposing a configuration
    already tried; after a few such repeats a seeded random draw finds an untried one.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {p.name: _distribution(p.values, p.range) for p in space.parameters}
    if not distributions:
        return None
    seed = space.search.seed + len(history)
    startup = max(2, (space.search.budget or 10) // 3)
    known = list(_known(space, history, distributions))
    tried = {record.candidate.key for record in history}
    samplers = [
        (optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup), TPE_PROPOSALS),
        (optuna.samplers.RandomSampler(seed=seed), MAX_PROPOSALS),
    ]
    direction = "maximize" if space.objective.goal is Goal.MAXIMIZE else "minimize"
    for sampler, proposals in samplers:
        study = optuna.create_study(direction=direction, sampler=sampler)
        study.add_trials(known)
        for _ in range(proposals):
            asked = study.ask(distributions)
            candidate = space.candidate(dict(asked.params))
            if candidate.key not in tried:
                return candidate
            study.tell(asked, state=optuna.trial.TrialState.FAIL)
    return None


def _distribution(values: list[Any] | None, spec: Range | None) -> optuna.distributions.BaseDistribution:
    if values is not None:
        return optuna.distributions.CategoricalDistribution(values)
    assert spec is not None
    if spec.integer:
        step = int(spec.step) if spec.step and not spec.log else 1
        return optuna.distributions.IntDistribution(int(spec.low), int(spec.high), log=spec.log, step=step)
    return optuna.distributions.FloatDistribution(
        spec.low, spec.high, log=spec.log, step=None if spec.log else spec.step
    )


def _known(
    space: SearchSpace, history: list[TrialRecord], distributions: dict[str, optuna.distributions.BaseDistribution]
) -> Iterator[optuna.trial.FrozenTrial]:
    """Finished trials as optuna trials; failures count as the worst value seen, so TPE steers away from them."""
    results = {t.number: config_result(space, t) for t in history if t.status.finished}
    means = [r.objective.mean for r in results.values() if r.eligible and r.objective and r.objective.mean is not None]
    worst = (min(means) if space.objective.goal is Goal.MAXIMIZE else max(means)) if means else None
    for trial in history:
        result = results.get(trial.number)
        params = {name: trial.candidate.overrides.get(name, space.base_value(name)) for name in distributions}
        if result is None or not all(_contains(distributions[n], v) for n, v in params.items()):
            continue
        value = result.objective.mean if result.eligible and result.objective else worst
        if value is None:
            yield optuna.trial.create_trial(
                params=params, distributions=distributions, state=optuna.trial.TrialState.FAIL
            )
        else:
            yield optuna.trial.create_trial(params=params, distributions=distributions, value=value)


def _contains(distribution: optuna.distributions.BaseDistribution, value: Any) -> bool:
    """Whether a stored value is one this distribution can produce (the base's value may lie outside it)."""
    if value is None:
        return False
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return value in distribution.choices
    if isinstance(distribution, optuna.distributions.IntDistribution | optuna.distributions.FloatDistribution):
        return not isinstance(value, bool | str) and distribution.low <= value <= distribution.high
    return False
