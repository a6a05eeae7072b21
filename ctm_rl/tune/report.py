"""What a study leaves: ``trials.csv``, ``best.yaml``, a line per trial and the closing summary."""

from __future__ import annotations

import csv
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ctm_rl.config import ExperimentConfig, build_dataclass, dump_config
from ctm_rl.runs import atomic_save, atomic_write_text
from ctm_rl.tune.objective import TrialOutcome
from ctm_rl.tune.space import SearchSpace, Value, apply_params
from ctm_rl.tune.study import best_trial

TRIALS_NAME, BEST_NAME = "trials.csv", "best.yaml"
TRIAL_FIELDS = ("number", "state", "value", "final_return", "pruned_at_step", "duration_s")


def _short(value: Value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def short_params(params: Mapping[str, Value], space: SearchSpace) -> str:
    """``name=value`` of the searched parameters (the fixed ones are the same in every trial)."""
    return " ".join(f"{name}={_short(params[name])}" for name in space.searched if name in params)


def progress_line(number: int, params: Mapping[str, Value], outcome: TrialOutcome, seconds: float,
                  space: SearchSpace) -> str:
    """One line for a trial that ended, e.g. ``trial 3: learning_rate=0.00123 ... -> 212 (final return 480),
    35 s``."""
    if outcome.state == "complete":
        result = f"{outcome.value:.4g} (final return {outcome.final_return:.4g})"
    elif outcome.state == "pruned":
        result = f"pruned at step {outcome.pruned_at}"
    elif outcome.state == "failed":
        result = f"failed (see {outcome.log})"
    else:
        result = "stopped by a signal (the next command runs it again)"
    return f"trial {number}: {short_params(params, space)} -> {result}, {seconds:.0f} s"


def write_trials_csv(study: optuna.Study, space: SearchSpace, path: Path) -> None:
    """One row per trial: number, state, value, final return, step pruned at, seconds, then its parameters."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        rows.append({
            "number": trial.number,
            "state": trial.state.name,
            "value": trial.value if trial.state == TrialState.COMPLETE else "",
            "final_return": trial.user_attrs.get("final_return", ""),
            "pruned_at_step": trial.last_step if trial.state == TrialState.PRUNED else "",
            "duration_s": round(trial.duration.total_seconds(), 1) if trial.duration is not None else "",
            **trial.params,
        })

    def save(temporary: str) -> None:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=[*TRIAL_FIELDS, *space.domains], restval="")
            writer.writeheader()
            writer.writerows(rows)

    atomic_save(path, save)


def best_config(base: Mapping[str, Any], trial: FrozenTrial) -> ExperimentConfig:
    """The base config with ``trial``'s parameters; length, seed and checkpoints stay the base config's."""
    return build_dataclass(ExperimentConfig, apply_params(base, trial.params))


def write_outputs(study: optuna.Study, space: SearchSpace, base: Mapping[str, Any], out: Path) -> None:
    """``out/trials.csv`` and, once a trial is complete, ``out/best.yaml`` (both replaced atomically)."""
    write_trials_csv(study, space, out / TRIALS_NAME)
    best = best_trial(study)
    if best is None:
        return
    header = (f"# ctm-rl tune: trial {best.number} of study {study.study_name!r}, the best: "
              f"{best.value:.4g} (final return {best.user_attrs['final_return']:.4g})\n")
    text = header + dump_config(best_config(base, best))
    atomic_write_text(out / BEST_NAME, text)


def _importance_lines(study: optuna.Study, space: SearchSpace) -> list[str]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not space.searched:
        return []
    if len(complete) < 2:
        return [f"parameter importance: needs 2 complete trials, the study has {len(complete)}"]
    with warnings.catch_warnings():
        # PED-ANOVA warns when few trials tell little apart (the line says how many it had), and Optuna before
        # 4 that it is experimental.
        warnings.simplefilter("ignore")
        importances = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(), params=space.searched)
    width = max(map(len, importances))
    return [f"parameter importance (PED-ANOVA over {len(complete)} complete trials):",
            *(f"  {name:<{width}}  {value:.2f}" for name, value in importances.items())]


def summary(study: optuna.Study, space: SearchSpace, out: Path) -> str:
    """The closing summary: trial counts, the best trial and its config, each parameter's importance."""
    trials = study.get_trials(deepcopy=False)
    states = Counter(trial.state for trial in trials)
    queued = f", {states[TrialState.WAITING]} queued to run again" if states[TrialState.WAITING] else ""
    lines = [(f"study {study.study_name!r}: {len(trials)} trials, {states[TrialState.COMPLETE]} complete, "
              f"{states[TrialState.PRUNED]} pruned, {states[TrialState.FAIL]} failed{queued}")]
    best = best_trial(study)
    if best is None:
        lines.append("no complete trial yet, so no best config")
    else:
        lines += [(f"best: trial {best.number}, {best.value:.4g} (final return "
                   f"{best.user_attrs['final_return']:.4g}): {short_params(best.params, space)}"),
                  f"best config: {out / BEST_NAME} (train it: ctm-rl train {out / BEST_NAME})"]
    lines += [*_importance_lines(study, space), f"every trial: {out / TRIALS_NAME}"]
    return "\n".join(lines)
