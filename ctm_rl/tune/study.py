"""The Optuna study behind ``ctm-rl tune``: its storage, resuming it, and its best trial.

A study remembers what its trials mean (base config, budget, seeds, objective, search space) and refuses
to be resumed with anything else, so that its trials stay comparable.  A trial left running by a command that
was killed is marked failed and enqueued again with its parameters, so that the next command re-runs it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.trial import FrozenTrial, TrialState

from ctm_rl.errors import UserError

# Study user attribute with what the trials mean; a study without it was not made by ctm-rl tune.
IDENTITY_ATTR = "ctm_rl_tune"
SAMPLER_SEED = 0
STARTUP_TRIALS = 5  # random trials before TPE models the results (RL-Zoo's choice too)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def storage_url(url: str | None, out: Path) -> str:
    """The study's storage: ``url``, or SQLite in ``out/study.db``.

    A relative SQLite path is made absolute: worker processes and Ray actors open the same URL, not
    necessarily from the same folder.
    """
    if url is None:
        return f"sqlite:///{(out / 'study.db').resolve()}"
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        return prefix + str(Path(url.removeprefix(prefix)).resolve())
    return url


def _differences(stored: dict[str, Any], identity: dict[str, Any]) -> list[str]:
    """What differs between two identities, e.g. ``["budget (5000, now 3000)", "config (eval, seed)"]``."""
    differences = [f"{key} ({stored.get(key)!r}, now {identity[key]!r})"
                   for key in ("budget", "seeds", "objective") if stored.get(key) != identity[key]]
    if stored.get("space") != identity["space"]:
        differences.append("search space")
    old, new = stored.get("config", {}), identity["config"]
    keys = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
    if keys:
        differences.append(f"config ({', '.join(keys)})")
    return differences


def requeue(study: optuna.Study, number: int, params: dict[str, Any]) -> None:
    """Mark the running trial ``number`` failed and enqueue its ``params``: an interrupted trial is run
    again, as a new trial with the same parameters, by the next command."""
    study.tell(number, state=TrialState.FAIL)
    study.enqueue_trial(params, user_attrs={"retry_of": number})


def _requeue_leftovers(study: optuna.Study, log: Callable[[str], None]) -> None:
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        requeue(study, trial.number, trial.params)
        log(f"trial {trial.number} was left running by an interrupted command: marked failed, enqueued again")


def connect(url: str) -> optuna.storages.BaseStorage:
    """The Optuna storage at ``url``, or a one-line error if it cannot be opened."""
    try:
        storage = optuna.storages.get_storage(url)
        optuna.get_all_study_names(storage)  # a server is only reached when asked something
    except (ImportError, sqlalchemy.exc.SQLAlchemyError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"cannot open the study storage {url!r}: {reason}") from None
    return storage


def study_exists(storage: optuna.storages.BaseStorage, name: str) -> bool:
    return name in optuna.get_all_study_names(storage)


def open_study(storage: optuna.storages.BaseStorage, name: str, identity: dict[str, Any],
               log: Callable[[str], None]) -> optuna.Study:
    """The study ``name``, created if new, resumed if its ``identity`` (plain data: config, budget, seeds,
    objective, space) is the one it was made with; with its TPE sampler seeded."""
    if not study_exists(storage, name):
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
        study.set_user_attr(IDENTITY_ATTR, identity)
    else:
        study = optuna.load_study(study_name=name, storage=storage)
        stored = study.user_attrs.get(IDENTITY_ATTR)
        if stored is None:
            raise UserError(f"study {name!r} was not made by ctm-rl tune: use another --study")
        stored = {"objective": "auc", **stored}  # studies made before --objective existed scored the area
        if stored != identity:
            raise UserError(f"study {name!r} was made with another {'; '.join(_differences(stored, identity))}: "
                            "use another --study or --out, or the settings it was made with")
        _requeue_leftovers(study, log)
    # Seeded by the number of trials so far: a resumed study must not draw its first trials' values again.
    # The constant liar counts running trials as bad ones, so that parallel workers do not all draw alike.
    sampler = optuna.samplers.TPESampler(n_startup_trials=STARTUP_TRIALS, seed=SAMPLER_SEED + len(study.trials),
                                         constant_liar=True)
    return optuna.load_study(study_name=name, storage=storage, sampler=sampler)


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The trials that count towards ``--trials``: complete or pruned (not failed)."""
    return study.get_trials(deepcopy=False, states=FINISHED)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The complete trial with the highest value, the higher final return between equal values."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda trial: (trial.value, trial.user_attrs.get("final_return", -math.inf)),
               default=None)
