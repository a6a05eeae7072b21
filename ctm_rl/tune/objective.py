"""What a trial is worth: its runs' evaluation curves made one number, reported while they train.

A trial trains its config for ``--budget`` steps on each of K seeds, one after the other (seeds
:data:`TRIAL_SEED`, +1, ...: apart from the seeds 0, 1, ... that a tuned config is then trained and
benchmarked with, so that the search does not pick what happens to suit the seeds it is judged on).

A run's score (``--objective``, docs/TUNING.md) is by default the area under its evaluation curve divided
by its length: the mean evaluation return over training, which rewards learning fast as well as learning
well.  ``late`` scores the evaluations in the last third of the budget instead: what the agent ends up
doing, for tasks where learning comes after a long plateau that the area would score like a flat curve
(docs/MEMORY.md).  The trial's value is the mean score over its seeds; the mean final return is kept beside
it to break ties.

While a run trains, each evaluation's mean return is reported to the study at the trial's step, and the
median pruner may stop the trial there, though not before the scored part of the curve has begun.  Steps
count over the trial's seeds one after the other (seed ``i``'s evaluation at step ``t`` is step
``i * budget + t``), so every trial reports at the same steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from stable_baselines3.common.callbacks import BaseCallback

from ctm_rl.bench.harness import RunResult, RunTask
from ctm_rl.bench.report import read_evaluations
from ctm_rl.config import ExperimentConfig, apply_overrides
from ctm_rl.tune.space import Value, apply_params

TRIAL_SEED = 1000

# Reports an evaluation's mean return at a step of the trial; True: the trial should be pruned.
Reporter = Callable[[int, float], bool]


# --- the score of a curve ----------------------------------------------------------------------------------


def curve_score(steps: Sequence[float], returns: Sequence[float]) -> float:
    """The area under an evaluation curve divided by its length: the mean return over training steps
    ``0..steps[-1]``, the curve linear between evaluations and level with the first one before it."""
    t, r = _curve(steps, returns)
    area = r[0] * t[0] + np.sum((r[1:] + r[:-1]) / 2 * np.diff(t))
    return float(area / t[-1])


def late_score(steps: Sequence[float], returns: Sequence[float], start: float) -> float:
    """The mean return of the evaluations at ``start`` or later; the last evaluation's if none is."""
    t, r = _curve(steps, returns)
    late = r[t >= start]
    return float(late.mean()) if late.size else float(r[-1])


def _curve(steps: Sequence[float], returns: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """A curve's steps and returns as arrays, checked: as many of each, at least one."""
    t = np.asarray(steps, dtype=float)
    r = np.asarray(returns, dtype=float)
    if t.size == 0 or t.shape != r.shape:
        raise ValueError(f"a curve needs as many steps as returns, at least one: {steps!r}, {returns!r}")
    return t, r


@dataclass(frozen=True)
class Objective:
    """What a run of ``budget`` steps is scored on (``name``: ``"auc"`` or ``"late"``, as ``--objective``
    takes them), and so from which step the median pruner may stop a trial."""

    name: str
    budget: int

    @property
    def scored_from(self) -> int:
        """The first step whose evaluation counts: 0 for the area, two thirds of the budget for ``late``."""
        return 0 if self.name == "auc" else 2 * self.budget // 3

    def score(self, steps: Sequence[float], returns: Sequence[float]) -> float:
        if self.name == "auc":
            return curve_score(steps, returns)
        return late_score(steps, returns, self.scored_from)

    def pruner(self) -> optuna.pruners.BasePruner:
        """The median pruner: once 5 trials are complete, a trial whose evaluation is below the median of the
        complete trials' at the same step stops there, though not in its first seed's first third (the area)
        or before its first seed's scored last third (``late``: a trial that is slow to start can still end
        well)."""
        warm_up = self.budget // 3 if self.name == "auc" else self.scored_from
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warm_up)


def evaluation_curve(run_dir: Path, freq: int, budget: int) -> tuple[list[int], list[float]]:
    """A run's evaluations at the steps they were due (multiples of ``freq``) up to ``budget``.

    The due step, not the step an evaluation happened at (the next env step of all the envs, later by up to
    ``n_envs - 1``), so that trials with different ``n_envs`` report at the same steps; and up to the
    budget: training ends with the rollout that passes it, whose evaluations no other trial has.
    """
    rows = read_evaluations(run_dir)
    points = [(step, float(row["mean_return"])) for row in rows
              if (step := int(row["timesteps"]) // freq * freq) <= budget]
    return [step for step, _ in points], [value for _, value in points]


class ReportEvaluations(BaseCallback):
    """``PeriodicEvaluation``'s ``callback_after_eval`` in a trial's run: reports each evaluation to the
    study, and stops training when the trial is to be pruned.

    :param report: where evaluations go (see :data:`Reporter`).
    :param offset: the trial's step at which this run starts (``seed index * budget``).
    """

    def __init__(self, report: Reporter, offset: int, freq: int, budget: int):
        super().__init__()
        self.report = report
        self.offset = offset
        self.freq = freq
        self.budget = budget

    def _on_step(self) -> bool:
        step = self.num_timesteps // self.freq * self.freq
        if step > self.budget:
            return True  # the rollout past the budget: not on the curve (see evaluation_curve)
        return not self.report(self.offset + step, self.parent.last_result.mean_return)


@cache
def _connect(storage_url: str, study_name: str) -> tuple[optuna.storages.BaseStorage, optuna.Study, int]:
    """The storage, the study and its id: one connection per process (a worker reports many evaluations)."""
    storage = optuna.storages.get_storage(storage_url)
    study = optuna.load_study(study_name=study_name, storage=storage)
    return storage, study, storage.get_study_id_from_name(study_name)


@dataclass(frozen=True)
class StudyReporter:
    """Reports to the study through its storage (which the process must reach): a :data:`Reporter`."""

    storage_url: str
    study_name: str
    number: int  # the trial's
    objective: Objective

    def __call__(self, step: int, value: float) -> bool:
        storage, study, study_id = _connect(self.storage_url, self.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.number)
        storage.set_trial_intermediate_value(trial_id, step, value)
        return self.objective.pruner().prune(study, storage.get_trial(trial_id))


# --- a trial's runs and their outcome ----------------------------------------------------------------------


@dataclass(frozen=True)
class TrialPlan:
    """What every trial of a study shares: the base config (raw, and validated), the objective (with the
    budget), the number of seeds, the output folder."""

    base: dict[str, Any]
    config: ExperimentConfig
    objective: Objective
    seeds: int
    out: Path

    @property
    def budget(self) -> int:
        return self.objective.budget

    @property
    def freq(self) -> int:
        return self.config.eval.freq

    def trial_dir(self, number: int) -> Path:
        return self.out / "trials" / f"trial_{number}"

    def tasks(self, number: int, params: Mapping[str, Value], reporter: Reporter) -> list[RunTask]:
        """The runs of trial ``number``: the base config with its ``params``, on each seed, for the budget,
        without periodic checkpoints, reporting to ``reporter``."""
        config = apply_params(self.base, params)
        tasks = []
        for index in range(self.seeds):
            seed = TRIAL_SEED + index
            raw = apply_overrides(config, [f"total_timesteps={self.budget}", "checkpoint_freq=0", f"seed={seed}"])
            callback = partial(ReportEvaluations, reporter, index * self.budget, self.freq, self.budget)
            run_dir = self.trial_dir(number) / f"seed_{seed}"
            tasks.append(RunTask(self.config.agent, self.config.env.id, seed, raw, run_dir,
                                 run_dir.with_suffix(".log"), callback_after_eval=callback))
        return tasks


def ran_to_budget(result: RunResult) -> bool:
    """Whether a run trained its whole budget (not failed, stopped by a signal or pruned)."""
    return result.status == "trained" and result.timesteps >= result.task.config["total_timesteps"]


@dataclass(frozen=True)
class TrialOutcome:
    """How a trial ended: ``complete`` (with its value and final return), ``pruned`` (at a step),
    ``failed`` (a run raised: its log) or ``stopped`` (by a signal)."""

    state: str
    value: float | None = None
    final_return: float | None = None
    pruned_at: int | None = None
    log: Path | None = None


def score_trial(results: Sequence[RunResult], plan: TrialPlan) -> TrialOutcome:
    """The outcome of a trial from its runs' results (the seeds it got to, in order)."""
    for result in results:
        if result.status == "stopped":
            return TrialOutcome("stopped")
        if result.status == "failed":
            return TrialOutcome("failed", log=result.task.log_path)
    curves = [evaluation_curve(result.task.run_dir, plan.freq, plan.budget) for result in results]
    if not ran_to_budget(results[-1]):  # the pruner stopped it after its last evaluation
        return TrialOutcome("pruned", pruned_at=(len(results) - 1) * plan.budget + curves[-1][0][-1])
    scores = [plan.objective.score(steps, returns) for steps, returns in curves]
    finals = [returns[-1] for _, returns in curves]
    return TrialOutcome("complete", float(np.mean(scores)), float(np.mean(finals)))
