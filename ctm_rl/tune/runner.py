"""Run a study's trials: in this process, on local worker processes, or as tasks of a Ray cluster.

This process asks the study for each trial and draws its parameters (so that one seeded sampler makes
every draw), hands the trial's runs to a worker, and tells the study how the trial ended.  At most
``workers`` trials run at once, on Ray too: the sampler learns from the trials that end before it draws
the next.  Runs are trained by the benchmark harness's ``train_one`` (one torch thread, a log per run).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Protocol

import optuna
from optuna.trial import TrialState

from ctm_rl.bench.harness import (
    RunResult,
    RunTask,
    connect_ray,
    train_one,
    train_packed,
    unpack_run,
    warm_up_worker,
)
from ctm_rl.signals import stop_workers_on_signals
from ctm_rl.tune.objective import (
    Objective,
    Reporter,
    StudyReporter,
    TrialOutcome,
    TrialPlan,
    ran_to_budget,
    score_trial,
)
from ctm_rl.tune.space import SearchSpace, Value
from ctm_rl.tune.study import requeue


def train_trial(tasks: Sequence[RunTask]) -> list[RunResult]:
    """Train a trial's runs one after the other in this process, until one ends short of its budget (the
    trial is then over: failed, stopped by a signal, or pruned)."""
    results = []
    for task in tasks:
        results.append(train_one(task))
        if not ran_to_budget(results[-1]):
            break
    return results


class Executor(Protocol):
    """Where trials run: ``submit`` starts one, ``results`` waits for it; ``reporter`` reaches the study."""

    def reporter(self, number: int) -> Reporter: ...

    def submit(self, tasks: Sequence[RunTask]) -> Future: ...

    def results(self, tasks: Sequence[RunTask], future: Future) -> list[RunResult]: ...


@dataclass
class InProcess:
    """One trial at a time in this process: no worker to start, and Ctrl-C stops the run in progress as it
    stops ``ctm-rl train``."""

    storage_url: str
    study_name: str
    objective: Objective

    def reporter(self, number: int) -> Reporter:
        return StudyReporter(self.storage_url, self.study_name, number, self.objective)

    def submit(self, tasks: Sequence[RunTask]) -> Future:
        future: Future = Future()
        future.set_result(train_trial(tasks))
        return future

    def results(self, tasks: Sequence[RunTask], future: Future) -> list[RunResult]:
        return future.result()


@dataclass
class LocalProcesses(InProcess):
    """Trials on a pool of worker processes, which report to the study through its storage."""

    pool: ProcessPoolExecutor | None = None

    def submit(self, tasks: Sequence[RunTask]) -> Future:
        return self.pool.submit(train_trial, tasks)


# --- Ray -------------------------------------------------------------------------------------------------


class _RayReports:
    """A Ray actor on this (the driver's) node that reports for the trials on the cluster, which then need
    not reach the study's storage (by default an SQLite file on this node's disk)."""

    def __init__(self, storage_url: str, study_name: str, objective: Objective):
        self.storage_url, self.study_name, self.objective = storage_url, study_name, objective

    def report(self, number: int, step: int, value: float) -> bool:
        return StudyReporter(self.storage_url, self.study_name, number, self.objective)(step, value)


@dataclass(frozen=True)
class RayReporter:
    """A :data:`~ctm_rl.tune.objective.Reporter` that reports through the :class:`_RayReports` actor."""

    actor: Any
    number: int

    def __call__(self, step: int, value: float) -> bool:
        import ray

        return ray.get(self.actor.report.remote(self.number, step, value))


def _train_trial_packed(tasks: Sequence[RunTask]) -> list[tuple[str, float | None, int | None, bytes]]:
    """:func:`train_trial` as a Ray task: each run trained in a temporary folder, returned packed."""
    packed = []
    for task in tasks:
        packed.append(train_packed(task))
        status, _, timesteps, _ = packed[-1]
        if not ran_to_budget(RunResult(task, status, timesteps=timesteps)):
            break
    return packed


class RayCluster:
    """Trials as tasks of a Ray cluster, one CPU each; their runs are unpacked into the output folder."""

    def __init__(self, address: str, storage_url: str, study_name: str, objective: Objective):
        self.ray = connect_ray(address)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(self.ray.get_runtime_context().get_node_id(), soft=False)
        self.actor = self.ray.remote(num_cpus=0, scheduling_strategy=here)(_RayReports).remote(
            storage_url, study_name, objective)
        self.remote = self.ray.remote(num_cpus=1)(_train_trial_packed)

    def reporter(self, number: int) -> Reporter:
        return RayReporter(self.actor, number)

    def submit(self, tasks: Sequence[RunTask]) -> Future:
        return self.remote.remote(tasks).future()

    def results(self, tasks: Sequence[RunTask], future: Future) -> list[RunResult]:
        try:
            packed = future.result()
        except self.ray.exceptions.RayError as error:  # the task's node or worker died: say so in its log
            tasks[0].log_path.parent.mkdir(parents=True, exist_ok=True)
            tasks[0].log_path.write_text(f"Ray task failed: {error}\n", encoding="utf-8")
            return [RunResult(tasks[0], "failed")]
        results = []
        for task, (status, wall, timesteps, archive) in zip(tasks, packed, strict=False):
            unpack_run(task, archive)
            results.append(RunResult(task, status, wall, timesteps))
        return results


@contextlib.contextmanager
def open_executor(workers: int, ray_address: str | None, storage_url: str, study_name: str,
                  objective: Objective) -> Iterator[Executor]:
    """The executor for ``workers`` trials at once: Ray's if ``ray_address``, else this process for one,
    else a pool of worker processes (spawned: forking a process that has used torch's threads can hang)."""
    if ray_address is not None:
        cluster = RayCluster(ray_address, storage_url, study_name, objective)
        try:
            yield cluster
        finally:
            cluster.ray.kill(cluster.actor)
    elif workers == 1:
        yield InProcess(storage_url, study_name, objective)
    else:
        # No work waits in the pool (run_trials submits one trial per free worker): a signal only has to stop
        # the running trials, which then end as "stopped" like an in-process one.
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=warm_up_worker) as pool, stop_workers_on_signals(lambda: None):
            yield LocalProcesses(storage_url, study_name, objective, pool)


# --- the loop --------------------------------------------------------------------------------------------

# Called as each trial ends: its number, parameters, outcome and wall-clock seconds.
TrialDone = Callable[[int, dict[str, Value], TrialOutcome, float], None]


def _tell(study: optuna.Study, trial: optuna.Trial, outcome: TrialOutcome) -> None:
    if outcome.state == "complete":
        trial.set_user_attr("final_return", outcome.final_return)
        study.tell(trial, outcome.value)
    elif outcome.state == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    elif outcome.state == "failed":
        study.tell(trial, state=TrialState.FAIL)
    else:  # stopped by a signal: run again by the next command
        requeue(study, trial.number, trial.params)


def run_trials(study: optuna.Study, space: SearchSpace, plan: TrialPlan, count: int, workers: int,
               executor: Executor, done: TrialDone) -> list[TrialOutcome]:
    """Run ``count`` new trials of ``study``, ``workers`` at a time, calling ``done`` as each ends; a trial
    stopped by a signal (Ctrl-C) is enqueued again and no new one is started."""
    in_flight: dict[Future, tuple[optuna.Trial, list[RunTask], float]] = {}
    outcomes: list[TrialOutcome] = []
    started = 0
    try:
        while started < count or in_flight:
            while started < count and len(in_flight) < workers:
                trial = study.ask()
                tasks = plan.tasks(trial.number, space.sample(trial), executor.reporter(trial.number))
                in_flight[executor.submit(tasks)] = (trial, tasks, time.perf_counter())
                started += 1
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                trial, tasks, start = in_flight.pop(future)
                outcome = score_trial(executor.results(tasks, future), plan)
                _tell(study, trial, outcome)
                outcomes.append(outcome)
                done(trial.number, trial.params, outcome, time.perf_counter() - start)
                if outcome.state == "stopped":
                    count = started
    except BaseException:
        for future in in_flight:  # Ctrl-C: queued trials must not start; running ones are requeued next time
            future.cancel()
        raise
    return outcomes
