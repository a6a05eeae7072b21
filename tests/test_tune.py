"""``ctm-rl tune``: a tiny study end to end, resuming it, the ``tune:`` section, the objective, bad input."""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from ctm_rl.cli import main
from ctm_rl.config import load_config
from ctm_rl.errors import ConfigError
from ctm_rl.runs import RunDir
from ctm_rl.tune.objective import (
    TRIAL_SEED,
    Objective,
    StudyReporter,
    TrialPlan,
    curve_score,
    evaluation_curve,
    late_score,
    score_trial,
)
from ctm_rl.tune.runner import train_trial
from ctm_rl.tune.space import Choice, Range, config_updates, parse_space
from ctm_rl.tune.study import best_trial

# A CTM of 8 neurons on 2 envs: a trial of 128 steps (two evaluations of 2 episodes) takes seconds.
TUNE = {
    "learning_rate": {"low": 1e-4, "high": 3e-3, "log": True},
    "n_envs": 2, "n_steps": [16, 32], "n_minibatches": [1, 2], "n_epochs": 1, "gamma": 0.99,
    "d_model": 8, "n_synch_out": 4, "iterations": 1, "memory_length": [2, 3], "bptt_steps": [None, 8],
}
CONFIG = {
    "agent": "ctm",
    "env": {"id": "CTM/CartPoleNoVel-v1", "n_envs": 8},
    "policy_kwargs": {"d_input": 8, "memory_hidden_dims": 2},
    "total_timesteps": 50_000,
    "eval": {"freq": 64, "n_episodes": 2},
    "checkpoint_freq": 10_000,
    "seed": 3,
    "device": "cpu",
    "tune": TUNE,
}
BUDGET = 128


def write_config(directory: Path, **changes: object) -> Path:
    path = directory / "tiny.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, **changes}), encoding="utf-8")
    return path


def tune_args(config: Path, out: Path, *extra: str) -> list[str]:
    return ["tune", str(config), "--trials", "2", "--budget", str(BUDGET), "--out", str(out), *extra]


def load_study(out: Path) -> optuna.Study:
    return optuna.load_study(study_name="tiny_ctm", storage=f"sqlite:///{out / 'study.db'}")


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-trial study run once for the module's tests (which copy it before changing it)."""
    root = tmp_path_factory.mktemp("tune")
    out = root / "out"
    assert main(tune_args(write_config(root), out)) == 0
    return out


def test_study_writes_trials_and_a_best_config_that_trains(study_dir: Path, tmp_path: Path) -> None:
    with (study_dir / "trials.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["number"], row["state"]) for row in rows] == [("0", "COMPLETE"), ("1", "COMPLETE")]
    assert all(float(row["value"]) > 0 and float(row["final_return"]) > 0 for row in rows)
    assert sorted(path.relative_to(study_dir).as_posix() for path in study_dir.glob("trials/*/*")) == [
        f"trials/trial_{n}/seed_{TRIAL_SEED}{suffix}" for n in (0, 1) for suffix in ("", ".log")]
    best = load_config(study_dir / "best.yaml")
    # The base config's length, seed and checkpoints, not the trials'.
    assert (best.total_timesteps, best.seed, best.checkpoint_freq) == (50_000, 3, 10_000)
    assert main(["train", str(study_dir / "best.yaml"), "--total-timesteps", "64",
                 "--run-dir", str(tmp_path / "run")]) == 0
    assert RunDir(tmp_path / "run").final_model.is_file()


def test_trials_train_the_budget_on_their_own_seeds(study_dir: Path) -> None:
    run = load_config(study_dir / "trials" / "trial_0" / f"seed_{TRIAL_SEED}" / "config.yaml")
    assert (run.total_timesteps, run.seed, run.checkpoint_freq) == (BUDGET, TRIAL_SEED, 0)
    # Each evaluation was reported to the study at its step.
    assert [sorted(t.intermediate_values) for t in load_study(study_dir).trials] == [[64, 128], [64, 128]]


def test_tune_section_narrows_and_fixes_the_space(study_dir: Path) -> None:
    trials = load_study(study_dir).trials
    for trial in trials:
        assert {name: trial.params[name] for name in ("n_envs", "n_epochs", "gamma", "d_model", "iterations")} \
            == {"n_envs": 2, "n_epochs": 1, "gamma": 0.99, "d_model": 8, "iterations": 1}
        assert 1e-4 <= trial.params["learning_rate"] <= 3e-3
        assert trial.params["n_steps"] in (16, 32) and trial.params["memory_length"] in (2, 3)
    best = load_config(study_dir / "best.yaml")
    params = best_trial(load_study(study_dir)).params
    assert best.algo_kwargs["gamma"] == 0.99 and best.env.n_envs == 2
    assert best.policy_kwargs == {"d_input": 8, "memory_hidden_dims": 2, "d_model": 8, "n_synch_out": 4,
                                  "iterations": 1, "memory_length": params["memory_length"]}
    assert best.algo_kwargs["batch_size"] == 2 * params["n_steps"] // params["n_minibatches"]


def test_same_command_resumes_the_study(study_dir: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    shutil.copytree(study_dir, out)
    config = write_config(tmp_path)
    capsys.readouterr()
    assert main(tune_args(config, out)) == 0
    assert "has 2 finished trials (--trials 2): none to run" in capsys.readouterr().out
    assert len(load_study(out).trials) == 2
    assert main([*tune_args(config, out), "--trials", "3"]) == 0
    assert "2 finished trials, running 1 more" in capsys.readouterr().out
    assert [t.number for t in load_study(out).trials] == [0, 1, 2]
    assert (out / "trials" / "trial_2").is_dir()
    # Another budget would make the trials incomparable: one error line, the study untouched.
    assert main(tune_args(config, out, "--budget", "256")) == 1
    assert_one_error_line(capsys, "was made with another budget (128, now 256)")
    assert main(tune_args(config, out, "--objective", "late")) == 1
    assert_one_error_line(capsys, "was made with another objective ('auc', now 'late')")
    assert len(load_study(out).trials) == 3


def test_a_study_from_before_objective_resumes_as_auc(study_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    shutil.copytree(study_dir, out)
    study = load_study(out)
    identity = dict(study.user_attrs["ctm_rl_tune"])
    del identity["objective"]  # what the studies of docs/results/tune were made with
    study.set_user_attr("ctm_rl_tune", identity)
    config = write_config(tmp_path)
    assert main(tune_args(config, out)) == 0
    assert "none to run" in capsys.readouterr().out
    assert main(tune_args(config, out, "--objective", "late")) == 1
    assert_one_error_line(capsys, "was made with another objective ('auc', now 'late')")


def test_a_trial_left_running_is_run_again(study_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    shutil.copytree(study_dir, out)
    killed = load_study(out).ask()  # as a killed command leaves it
    n_steps = killed.suggest_categorical("n_steps", [16, 32])
    assert main([*tune_args(write_config(tmp_path), out), "--trials", "3"]) == 0
    assert "trial 2 was left running by an interrupted command" in capsys.readouterr().out
    trials = load_study(out).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert trials[3].params["n_steps"] == n_steps and trials[3].user_attrs["retry_of"] == 2


# --- the objective and pruning ---------------------------------------------------------------------------


def test_curve_score_is_the_mean_return_over_training() -> None:
    # Level with the first evaluation before it, linear between evaluations: (0*100 + 500 + 1500 + 2500) / 400.
    assert curve_score([100, 200, 300, 400], [0.0, 10.0, 20.0, 30.0]) == pytest.approx(11.25)
    assert curve_score([100, 200, 300], [7.0, 7.0, 7.0]) == pytest.approx(7.0)
    assert curve_score([500], [3.0]) == pytest.approx(3.0)
    # Learning sooner scores higher, for the same final return.
    assert curve_score([100, 200, 300], [0.0, 30.0, 30.0]) > curve_score([100, 200, 300], [0.0, 0.0, 30.0])
    with pytest.raises(ValueError):
        curve_score([], [])


def test_late_score_is_the_mean_of_the_last_third() -> None:
    steps, plateau, flat = [100, 200, 300, 400, 500, 600], [0.0, 0.4, 0.4, 0.4, 0.4, 0.9], [0.4] * 6
    late = Objective("late", budget=600)
    assert late.scored_from == 400
    assert late.score(steps, plateau) == pytest.approx((0.4 + 0.4 + 0.9) / 3)
    # A late climb beats a flat curve that the area scores higher: the reason for "late".
    assert late.score(steps, plateau) > late.score(steps, flat)
    auc = Objective("auc", budget=600)
    assert auc.score(steps, plateau) < auc.score(steps, flat) and auc.scored_from == 0
    assert late_score([100, 200], [1.0, 2.0], start=400) == 2.0  # none that late: the last evaluation
    with pytest.raises(ValueError):
        late_score([], [], start=0)


def test_evaluation_curve_takes_due_steps_up_to_the_budget(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    for steps, value in ((66, 1.0), (130, 2.0), (194, 3.0), (258, 4.0)):  # n_envs 3: a little late
        run.append_evaluation({"timesteps": steps, "mean_return": value})
    assert evaluation_curve(tmp_path, freq=64, budget=192) == ([64, 128, 192], [1.0, 2.0, 3.0])


def test_a_pruned_trial_stops_training_at_the_evaluation(tmp_path: Path) -> None:
    config_path = write_config(tmp_path)
    base = yaml.safe_load(config_path.read_text())
    plan = TrialPlan(base, load_config(config_path), Objective("auc", BUDGET), seeds=2, out=tmp_path)
    params = {"learning_rate": 1e-3, "lr_schedule": "constant", "n_steps": 16, "n_envs": 2, "n_minibatches": 1,
              "n_epochs": 1, "gamma": 0.99, "gae_lambda": 0.95, "ent_coef": 0.0, "clip_range": 0.2,
              "iterations": 1, "memory_length": 2, "d_model": 8, "n_synch_out": 4, "bptt_steps": None}
    reports = []

    def prune_at_second(step: int, value: float) -> bool:
        reports.append(step)
        return step >= 2 * BUDGET - 64  # the second seed's first evaluation (steps count over seeds)

    results = train_trial(plan.tasks(0, params, prune_at_second))
    assert reports == [64, 128, BUDGET + 64]
    assert [r.status for r in results] == ["trained", "trained"] and results[1].timesteps < BUDGET
    outcome = score_trial(results, plan)
    assert (outcome.state, outcome.pruned_at) == ("pruned", BUDGET + 64)


def test_study_reporter_prunes_below_the_median(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=url, study_name="s", direction="maximize")
    for _ in range(5):  # the median pruner's start-up trials
        trial = study.ask()
        trial.report(10.0, 100)
        study.tell(trial, 10.0)
    good, bad, early = study.ask(), study.ask(), study.ask()
    assert not StudyReporter(url, "s", good.number, Objective("auc", 0))(100, 12.0)
    assert StudyReporter(url, "s", bad.number, Objective("auc", 0))(100, 2.0)
    # Warm-up: a third of the budget for the area, two thirds (where the score starts) for "late".
    assert not StudyReporter(url, "s", early.number, Objective("auc", 1000))(100, 2.0)
    late = study.ask()
    assert StudyReporter(url, "s", late.number, Objective("late", 150))(100, 2.0)
    assert not StudyReporter(url, "s", study.ask().number, Objective("late", 152))(100, 2.0)
    assert study.trials[bad.number].intermediate_values == {100: 2.0}


def test_best_trial_breaks_ties_by_final_return() -> None:
    study = optuna.create_study(direction="maximize")
    for final in (1.0, 5.0, 3.0):
        trial = study.ask()
        trial.set_user_attr("final_return", final)
        study.tell(trial, 2.0)
    assert best_trial(study).number == 1


# --- the search space ------------------------------------------------------------------------------------


def test_config_updates_make_the_values_fit() -> None:
    params = {"learning_rate": 2e-4, "lr_schedule": "linear", "n_steps": 48, "n_envs": 4, "n_minibatches": 8,
              "n_epochs": 3, "gamma": 0.99, "gae_lambda": 0.95, "ent_coef": 0.01, "clip_range": 0.2,
              "iterations": 2, "memory_length": 4, "d_model": 32, "n_synch_out": 64, "bptt_steps": 32}
    updates = config_updates(params)
    assert updates["algo_kwargs.learning_rate"] == "lin_0.0002"
    assert updates["algo_kwargs.batch_size"] == 4 * 48 // 8
    assert updates["policy_kwargs.n_synch_out"] == 32  # at most d_model
    assert updates["algo_kwargs.bptt_steps"] == 24  # the largest divisor of n_steps up to 32
    assert config_updates({**params, "lr_schedule": "constant", "bptt_steps": None})[
        "algo_kwargs.learning_rate"] == 2e-4
    # null: the whole rollout, also over a base config's chunks
    assert config_updates({**params, "bptt_steps": None})["algo_kwargs.bptt_steps"] is None


def test_parse_space_defaults_narrowing_and_other_agents() -> None:
    space, ignored = parse_space({"gamma": 0.98, "n_envs": [4, 8], "d_model": 64,
                                  "ent_coef": {"low": 0.0, "high": 0.05}}, "lstm")
    assert ignored == ["tune.d_model"]
    assert space.domains["gamma"] == Choice((0.98,)) and space.domains["n_envs"] == Choice((4, 8))
    assert space.domains["ent_coef"] == Range(0.0, 0.05)
    assert "lstm_hidden_size" in space.domains and "iterations" not in space.domains
    assert "gamma" not in space.searched and "n_envs" in space.searched
    with pytest.raises(ConfigError, match="did you mean 'tune.memory_length'"):
        parse_space({"memory_lenght": 3}, "ctm")


# --- bad input -------------------------------------------------------------------------------------------


def assert_one_error_line(capsys: pytest.CaptureFixture[str], expected: str) -> None:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ctm-rl: error: ") and expected in err, err


@pytest.mark.parametrize(("extra", "expected"), [
    (("--trials", "0"), "--trials must be a positive integer, got 0"),
    (("--budget", "0"), "--budget must be a positive integer, got 0"),
    (("--set", "tune.learnig_rate=0.1"), "unknown config key 'tune.learnig_rate'"),
    (("--set", "tune.learning_rate={low: 0.1, high: 0.01}"), "needs low < high"),
    (("--set", "tune.n_steps={low: 8, high: 6.5}"), "'tune.n_steps.high' must be a positive integer"),
    (("--set", "tune.batch_size=[64]"), "narrow 'n_minibatches' instead"),
    (("--set", "eval.freq=0"), "eval.freq must be from 1 to --budget"),
    (("--storage", "postgresql://nohost/x"), "cannot open the study storage 'postgresql://nohost/x'"),
    (("--storage", "sqlite:////nonexistent/dir/x.db"), "cannot open the study storage"),
])
def test_bad_input_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     extra: tuple[str, ...], expected: str) -> None:
    args = tune_args(write_config(tmp_path), tmp_path / "out")
    assert main([*args, *extra]) == 1
    assert_one_error_line(capsys, expected)
    assert not (tmp_path / "out").exists()  # nothing is written before every input is checked


def test_missing_config_and_missing_ray_are_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(tune_args(tmp_path / "nothere.yaml", tmp_path / "out")) == 1
    assert_one_error_line(capsys, "config file not found")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main([*tune_args(write_config(tmp_path), tmp_path / "out"), "--ray-address", "auto"]) == 1
    assert_one_error_line(capsys, "--ray-address needs Ray: pip install 'ctm-rl[ray]'")
    assert not (tmp_path / "out").exists()


def test_out_with_other_files_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(tune_args(write_config(tmp_path), out)) == 1
    assert_one_error_line(capsys, "holds other files than a study's")
    assert [path.name for path in out.iterdir()] == ["notes.txt"]
