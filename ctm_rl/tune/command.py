"""The ``ctm-rl tune`` sub-command: its arguments and what it does."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ctm_rl.errors import UserError

DEFAULT_OUT = Path("tune")
# A folder that holds one of these is a study's output folder; any other non-empty folder is not written to.
_OUTPUTS = ("study.db", "trials", "trials.csv", "best.yaml")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Counts are read as plain ints and checked in `run`: a bad value is then one `ctm-rl: error:` line
    # like every other bad input, not argparse's usage block.
    parser.add_argument("config", type=Path, help="experiment config (YAML) to tune; its tune: section "
                        "narrows the search space (docs/TUNING.md)")
    parser.add_argument("--trials", type=int, required=True, metavar="N",
                        help="trials the study should have finished (complete or pruned); the same command "
                             "again resumes the study and runs only the missing ones")
    parser.add_argument("--budget", type=int, required=True, metavar="STEPS",
                        help="env steps each trial trains on each seed")
    parser.add_argument("--objective", choices=("auc", "late"), default="auc",
                        help="a run's score: auc, the area under its evaluation curve (the mean return over "
                             "training: fast learning counts; default); late, the mean return of its "
                             "evaluations in the last third of the budget (what it ends up doing: for tasks "
                             "learned after a long plateau, e.g. memory)")
    parser.add_argument("--seeds", type=int, default=1, metavar="K",
                        help="seeds per trial, 1000 to 1000+K-1; a trial's value is the mean (default 1)")
    parser.add_argument("--workers", type=int, default=1, metavar="W",
                        help="trials at once: worker processes of one torch thread each, or Ray tasks "
                             "(default 1: in this process)")
    parser.add_argument("--storage", metavar="URL",
                        help="Optuna storage URL, e.g. postgresql://user@host/db (default: sqlite:///DIR/study.db)")
    parser.add_argument("--study", metavar="NAME", help="study name (default: <config file name>_<agent>)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help=f"output folder: trial runs, trials.csv, best.yaml (default: {DEFAULT_OUT}/<study>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set eval.n_episodes=5 (repeatable)")
    parser.add_argument("--ray-address", metavar="auto|HOST:PORT",
                        help="run the trials as tasks of this existing Ray cluster instead of local processes "
                             "(pip install 'ctm-rl[ray]'); results land in DIR as usual")


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not any((out / name).exists() for name in _OUTPUTS):
        raise UserError(f"--out {out} holds other files than a study's: refusing to write into it")


def run(args: argparse.Namespace) -> int:
    # Imported here: Optuna, SQLAlchemy and the trainers are only needed by this command.
    import optuna

    from ctm_rl.bench.harness import check_run_config
    from ctm_rl.config import apply_overrides, config_to_dict, read_config_file
    from ctm_rl.tune.objective import Objective, TrialOutcome, TrialPlan
    from ctm_rl.tune.report import progress_line, summary, write_outputs
    from ctm_rl.tune.runner import open_executor, run_trials
    from ctm_rl.tune.space import Value, parse_space
    from ctm_rl.tune.study import connect, finished_trials, open_study, storage_url, study_exists

    for value, flag in ((args.trials, "--trials"), (args.budget, "--budget"), (args.seeds, "--seeds"),
                        (args.workers, "--workers")):
        if value < 1:
            raise UserError(f"{flag} must be a positive integer, got {value}")
    base = apply_overrides(read_config_file(args.config), args.overrides)
    config = check_run_config(base)
    space, ignored = parse_space(config.tune, config.agent)
    if not 1 <= config.eval.freq <= args.budget:
        raise UserError(f"trials are scored by their periodic evaluations: eval.freq must be from 1 to --budget "
                        f"({args.budget}), got {config.eval.freq}")
    name = args.study or f"{args.config.stem}_{config.agent}"
    out = args.out or DEFAULT_OUT / name
    _check_out(out)
    url = storage_url(args.storage, out)
    objective = Objective(args.objective, args.budget)
    # The executor first: Ray is connected to (or found missing) before anything is written.
    with open_executor(args.workers, args.ray_address, url, name, objective) as executor:
        if args.storage is None:
            out.mkdir(parents=True, exist_ok=True)
        storage = connect(url)
        if not study_exists(storage, name) and any((out / "trials").glob("*")):
            raise UserError(f"{out / 'trials'} holds the runs of another study than {name!r}, which {url} "
                            "does not have: use another --out")
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # this command prints a line per trial itself
        # Through JSON and back, like the copy the storage keeps, so that the two compare equal.
        identity = json.loads(json.dumps({"config": config_to_dict(config), "budget": args.budget,
                                          "seeds": args.seeds, "objective": args.objective,
                                          "space": space.describe()}))
        study = open_study(storage, name, identity, print)
        out.mkdir(parents=True, exist_ok=True)
        if ignored:
            print(f"note: {', '.join(ignored)}: not parameters of agent {config.agent!r}, ignored")
        finished = len(finished_trials(study))
        missing = args.trials - finished
        outcomes: list[TrialOutcome] = []
        if missing <= 0:
            print(f"study {name!r} has {finished} finished trials (--trials {args.trials}): none to run")
        else:
            print(f"study {name!r}: {finished} finished trials, running {missing} more, {args.workers} at a "
                  f"time (runs and logs in {out / 'trials'})")

            def done(number: int, params: dict[str, Value], outcome: TrialOutcome, seconds: float) -> None:
                print(progress_line(number, params, outcome, seconds, space), flush=True)
                write_outputs(study, space, base, out)

            plan = TrialPlan(base, config, objective, args.seeds, out)
            outcomes = run_trials(study, space, plan, missing, args.workers, executor, done)
    write_outputs(study, space, base, out)
    print(summary(study, space, out))
    if any(outcome.state == "stopped" for outcome in outcomes):
        print("ctm-rl: interrupted; the same command resumes the study", file=sys.stderr)
        return 130
    failed = [outcome for outcome in outcomes if outcome.state == "failed"]
    if failed:
        print(f"ctm-rl: error: {len(failed)} of {len(outcomes)} trials failed (the same command runs others in "
              f"their place): {', '.join(str(outcome.log) for outcome in failed)}", file=sys.stderr)
        return 1
    return 0
