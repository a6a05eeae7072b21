"""The ``ctm-rl`` command line: train, resume, eval, visualize, envs, and every kind of bad input.

Bad input must end with exactly one ``ctm-rl: error: ...`` line on stderr, a non-zero exit status, no
traceback, and no file of an earlier run changed.
"""

from __future__ import annotations

import copy
import csv
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from agents import build_model, get_agent, load_agent, make_env
from ctm_rl import training
from ctm_rl.callbacks import ProgressBar
from ctm_rl.cli import COMMANDS, main
from ctm_rl.config import load_config
from ctm_rl.evaluation import EvaluationStopped, evaluate
from ctm_rl.ppo import CTMPPO
from ctm_rl.runs import RunDir, atomic_save
from ctm_rl.training import TrainingOutcome
from envs import list_envs

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CARTPOLE_PT = FIXTURES / "cartpole_tiny.checkpoint.pt"
MINIGRID_PT = FIXTURES / "minigrid_tiny.checkpoint.pt"

TINY = {
    "description": "test run",
    "agent": "ctm",
    "env": {"id": "CTM/CartPoleNoVel-v1", "n_envs": 2, "normalize_reward": True},
    "policy_kwargs": {"d_model": 8, "d_input": 8, "memory_length": 3, "memory_hidden_dims": 2,
                      "n_synch_out": 4, "iterations": 1},
    "algo_kwargs": {"n_steps": 16, "batch_size": 16, "n_epochs": 1, "learning_rate": "lin_1e-3"},
    "total_timesteps": 128,
    "eval": {"freq": 64, "n_episodes": 2},
    "checkpoint_freq": 64,
    "seed": 0,
    "device": "cpu",
}


def write_config(directory: Path, name: str = "tiny.yaml", **changes: object) -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump({**TINY, **changes}), encoding="utf-8")
    return path


def cli(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_error(result: tuple[int, str, str], *fragments: str) -> None:
    """Non-zero exit, one 'ctm-rl: error:' line on stderr, no traceback, the message names the problem."""
    code, _, err = result
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctm-rl: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny CTM run, trained once through the command line and shared by the read-only tests."""
    root = tmp_path_factory.mktemp("cli")
    run = root / "run"
    assert main(["train", str(write_config(root)), "--run-dir", str(run)]) == 0
    return run


@pytest.fixture
def run_copy(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of the shared run that a test may damage."""
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


# --- train ----------------------------------------------------------------------------------------------


def test_train_fills_the_run_directory(run_dir):
    run = RunDir(run_dir)
    config = load_config(run.config)
    assert (config.agent, config.total_timesteps) == ("ctm", 128)
    assert config.algo_kwargs["learning_rate"] == "lin_1e-3"  # as written: schedules are built at load
    assert list(run.tensorboard.glob("ctm_*/events.out.tfevents.*"))
    for path in (run.final_model, run.best_model, run.checkpoint(64), run.checkpoint(128)):
        assert path.is_file() and path.with_name(f"{path.stem}_vecnormalize.pkl").is_file(), path
    with run.evaluations.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["timesteps"]) for row in rows] == [64, 128]
    assert all(float(row["mean_return"]) > 0 and row["episodes"] == "2" for row in rows)
    assert not list(run_dir.rglob(".*.tmp*")), "temporary files left behind"
    model = CTMPPO.load(run.final_model, device="cpu")
    assert model.num_timesteps == 128 and model.policy.ctm.d_model == 8


def test_train_options_override_the_config(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path)
    code, out, _ = cli(capsys, "train", config, "--total-timesteps", 32, "--seed", 3, "--n-envs", 1,
                       "--set", "eval.freq=0", "--set", "checkpoint_freq=0", "--set", "agent=mlp")
    assert code == 0
    run = RunDir(tmp_path / "runs" / "tiny_mlp_1")  # the default run directory
    assert f"run directory: {Path('runs') / 'tiny_mlp_1'}" in out
    assert "policy_kwargs.d_model" in out and "not options of agent 'mlp', ignored" in out  # CTM-only options
    config = load_config(run.config)
    assert (config.total_timesteps, config.seed, config.env.n_envs, config.agent) == (32, 3, 1, "mlp")
    assert run.final_model.is_file() and not run.evaluations.exists() and not run.best_model.exists()
    assert run.latest_checkpoint()[0] == 32  # the end of training is always resumable
    # What to try next, with the run filled in (no visualize: it shows a CTM's neurons).
    assert f"ctm-rl eval {Path('runs') / 'tiny_mlp_1'} --episodes 10" in out
    assert f"tensorboard --logdir {Path('runs') / 'tiny_mlp_1' / 'tb'}" in out
    assert "ctm-rl visualize" not in out


def test_a_finished_ctm_run_suggests_visualize_and_a_stopped_one_nothing(tmp_path, capsys, monkeypatch):
    config = write_config(tmp_path, "with space.yaml")
    code, out, _ = cli(capsys, "train", config, "--total-timesteps", 32, "--n-envs", 1, "--run-dir",
                       tmp_path / "my run", "--set", "eval.freq=0", "--set", "checkpoint_freq=0")
    assert code == 0
    assert f"ctm-rl visualize '{tmp_path / 'my run'}'" in out  # quoted for the shell
    monkeypatch.setattr("ctm_rl.cli.start_training", lambda *a, **k: TrainingOutcome(RunDir(tmp_path), 5, 2))
    code, out, _ = cli(capsys, "train", config, "--run-dir", tmp_path / "other")
    assert code == 130 and "next:" not in out


def test_help_lists_every_command(capsys):
    code, out, _ = cli(capsys, "--help")
    assert code == 0 and all(name in out for name in COMMANDS)


def test_the_progress_bar_shows_steps_rate_and_recent_return(tmp_path, capsys):
    config = replace(load_config(write_config(tmp_path)), agent="mlp")
    model, _ = build_model(config, make_env(config, get_agent("mlp"), n_envs=2, seed=0, training=True))
    model.learn(256, callback=ProgressBar(256, disable=False))
    bar = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "256/256" in bar and "step/s" in bar and "return " in bar


def test_the_console_script_reports_errors_cleanly(tmp_path):
    script = Path(sys.executable).with_name("ctm-rl")
    if not script.exists():
        pytest.skip("ctm-rl is not installed in this environment")
    bad = subprocess.run([str(script), "train", str(tmp_path / "missing.yaml")], check=False,
                         capture_output=True, text=True, timeout=120)
    assert_clean_error((bad.returncode, bad.stdout, bad.stderr), "config file not found")


# --- stop and resume ------------------------------------------------------------------------------------


def start_long_run(tmp_path: Path) -> tuple[subprocess.Popen, RunDir]:
    """A training process that runs until stopped, once it has written its first checkpoint."""
    run = RunDir(tmp_path / "run")
    config = write_config(tmp_path, total_timesteps=10**7, checkpoint_freq=32, eval={"freq": 0})
    command = [sys.executable, "-m", "ctm_rl.cli", "train", str(config), "--run-dir", str(run.root)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=tmp_path)
    deadline = time.monotonic() + 120
    while run.latest_checkpoint() is None:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.2)
    return process, run


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_saves_a_resumable_checkpoint(tmp_path, capsys, monkeypatch, signum):
    process, run = start_long_run(tmp_path)
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, err
    assert "Traceback" not in err and "continue with: ctm-rl train --resume" in out
    steps, checkpoint = run.latest_checkpoint()
    assert f"stopped at step {steps}" in out
    if signum != signal.SIGINT:
        return

    # --resume restores the step count, the optimizer state and the VecNormalize statistics ...
    saved = CTMPPO.load(checkpoint, device="cpu")
    assert saved.num_timesteps == steps
    with checkpoint.with_name(f"{checkpoint.stem}_vecnormalize.pkl").open("rb") as handle:
        saved_normalization = pickle.load(handle)
    resumed = {}
    real_learn = training._learn

    def capture(model, *args, **kwargs):
        # Copies: training goes on to update both in place.
        resumed["normalization"] = copy.deepcopy(model.get_vec_normalize_env().ret_rms)
        resumed["training"] = model.get_vec_normalize_env().training
        resumed["optimizer"] = copy.deepcopy(model.policy.optimizer.state_dict())
        return real_learn(model, *args, **kwargs)

    monkeypatch.setattr(training, "_learn", capture)
    code, out, err = cli(capsys, "train", "--resume", run.root, "--total-timesteps", steps + 64)
    assert code == 0, err
    assert f"resuming {run.root} at step {steps}" in out
    assert resumed["optimizer"]["state"] and _same_optimizer_state(resumed["optimizer"],
                                                                    saved.policy.optimizer.state_dict())
    assert resumed["training"]
    np.testing.assert_array_equal(resumed["normalization"].var, saved_normalization.ret_rms.var)
    assert resumed["normalization"].count == saved_normalization.ret_rms.count > 1

    # ... and trains on from there to the new total.
    final = CTMPPO.load(run.final_model, device="cpu")
    assert final.num_timesteps >= steps + 64
    assert load_config(run.config).total_timesteps == steps + 64
    assert len(list(run.tensorboard.iterdir())) == 1  # the TensorBoard curve continues in the same folder


def _same_optimizer_state(a: dict, b: dict) -> bool:
    return all(torch.equal(a["state"][i][k], b["state"][i][k]) for i in b["state"] for k in b["state"][i])


def test_resume_extends_a_finished_run(run_copy, capsys):
    assert_clean_error(cli(capsys, "train", "--resume", run_copy), "already has 128 of its 128 steps",
                       "--total-timesteps")
    code, out, _ = cli(capsys, "train", "--resume", run_copy, "--total-timesteps", 160)
    assert code == 0 and f"resuming {run_copy} at step 128" in out
    assert CTMPPO.load(RunDir(run_copy).final_model).num_timesteps == 160


def test_init_from_starts_a_new_run_from_another_runs_weights(run_dir, tmp_path, capsys):
    source = Path(shutil.copytree(run_dir, tmp_path / "ctm" / "seed_3"))
    # "{agent}/seed_{seed}" names each run's own earlier one; a zero learning rate leaves the weights as loaded.
    code, out, _ = cli(capsys, "train", write_config(tmp_path), "--run-dir", tmp_path / "stage2", "--seed", 3,
                       "--set", f"init_from={tmp_path / '{agent}' / 'seed_{seed}'}",
                       "--set", "algo_kwargs.learning_rate=0.0", "--total-timesteps", 32)
    assert code == 0 and f"starting from the weights of {RunDir(source).final_model}" in out
    before, after = (CTMPPO.load(RunDir(path).final_model, device="cpu") for path in (source, tmp_path / "stage2"))
    assert after.num_timesteps == 32  # a new run: steps and schedules start over
    for name, tensor in before.policy.state_dict().items():
        assert torch.equal(tensor, after.policy.state_dict()[name]), name


def test_init_from_bad_sources_fail_before_creating_the_run(run_dir, tmp_path, capsys):
    config = write_config(tmp_path)
    for init_from, fragment in [(tmp_path / "missing", "is neither a run directory nor a model .zip"),
                                (run_dir / "config.yaml", "is neither a run directory nor a model .zip")]:
        assert_clean_error(cli(capsys, "train", config, "--run-dir", tmp_path / "run",
                               "--set", f"init_from={init_from}"), fragment)
    assert_clean_error(cli(capsys, "train", config, "--run-dir", tmp_path / "run", "--set", f"init_from={run_dir}",
                           "--set", "policy_kwargs.d_model=16"), "differs from this config's", "size mismatch")
    assert not (tmp_path / "run").exists()


# --- eval, visualize, envs ------------------------------------------------------------------------------


def test_eval_prints_return_length_and_success(run_dir, capsys):
    code, out, _ = cli(capsys, "eval", run_dir, "--episodes", 3)
    assert code == 0
    assert f"{run_dir / 'final_model.zip'} on CTM/CartPoleNoVel-v1: 3 episodes, deterministic, seed 0" in out
    assert "mean return" in out and "±" in out and "mean length" in out
    assert "success rate  n/a" in out


def test_eval_a_checkpoint_stochastically_on_another_env(run_dir, capsys):
    code, out, _ = cli(capsys, "eval", run_dir / "checkpoints" / "model_64_steps.zip", "--episodes", 2,
                       "--stochastic", "--env", "CartPole-v1", "--seed", 5)
    assert code == 0 and "model_64_steps.zip on CartPole-v1: 2 episodes, stochastic, seed 5" in out


def test_eval_reports_success_where_the_env_gives_it(tmp_path, capsys):
    config = write_config(tmp_path, env={"id": "CTM/Memory-L4-v0", "n_envs": 2,
                                         "wrappers": ["minigrid.wrappers.ImgObsWrapper"]},
                          total_timesteps=32, eval={"freq": 0}, checkpoint_freq=0)
    assert cli(capsys, "train", config, "--run-dir", tmp_path / "run")[0] == 0
    code, out, _ = cli(capsys, "eval", tmp_path / "run", "--episodes", 2)
    assert code == 0 and "success rate  " in out and "n/a" not in out


@pytest.mark.parametrize("command", ["eval", "visualize"])
@pytest.mark.parametrize("env_id, named", [("CTM/AcrobotNoVel-v1", "(6,)"), ("CTM/Memory-L4-v0", "Dict(")])
def test_an_env_with_other_spaces_is_one_line_naming_both(run_dir, tmp_path, capsys, command, env_id, named):
    extra = ["--out", tmp_path / "media"] if command == "visualize" else []
    result = cli(capsys, command, run_dir, "--env", env_id, *extra)
    assert_clean_error(result, env_id, "CTM/CartPoleNoVel-v1", named, "(4,)")
    assert not (tmp_path / "media").exists()


def test_eval_films_the_first_episode(run_dir, tmp_path, capsys):
    video = tmp_path / "episode.gif"
    code, out, _ = cli(capsys, "eval", run_dir, "--episodes", 1, "--video", video)
    assert code == 0 and f"video         {video}" in out
    assert video.read_bytes()[:6] == b"GIF89a"


@pytest.mark.parametrize("checkpoint, env_id", [(CARTPOLE_PT, "CartPole-v1"),
                                                (MINIGRID_PT, "MiniGrid-FourRooms-v0")])
def test_eval_reads_the_authors_checkpoints(checkpoint, env_id, capsys):
    code, out, _ = cli(capsys, "eval", checkpoint, "--episodes", 1)
    assert code == 0 and f"on {env_id}: 1 episodes" in out and "mean return" in out


def test_envs_lists_the_suite(capsys):
    code, out, _ = cli(capsys, "envs")
    assert code == 0
    for env_id, description in list_envs():
        assert env_id in out and description in out


def test_visualize_writes_the_media_of_an_episode(run_dir, tmp_path, capsys):
    code, out, _ = cli(capsys, "visualize", run_dir, "--out", tmp_path / "media", "--neurons", 4)
    assert code == 0
    written = [Path(line) for line in out.splitlines()]
    assert written and all(path.is_file() and path.parent == tmp_path / "media" for path in written)
    assert any(path.suffix == ".gif" for path in written)


def test_visualize_needs_a_ctm(tmp_path, capsys):
    config = write_config(tmp_path, agent="mlp", total_timesteps=16, eval={"freq": 0}, checkpoint_freq=0)
    assert cli(capsys, "train", config, "--run-dir", tmp_path / "run")[0] == 0
    assert_clean_error(cli(capsys, "visualize", tmp_path / "run"),
                       "visualize shows a CTM's internal activity", "ctm-rl eval --video")


# --- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("changes, overrides, fragments", [
    ({"total_timestep": 5}, [], ["unknown config key 'total_timestep'", "did you mean 'total_timesteps'"]),
    ({}, ["--set", "env.n_env=3"], ["unknown config key 'env.n_env'", "did you mean 'env.n_envs'"]),
    ({}, ["--set", "policy_kwargs.d_modle=3"], ["did you mean 'policy_kwargs.d_model'"]),
    ({}, ["--set", "env.n_envs=eight"], ["'env.n_envs' must be an integer, got 'eight'"]),
    ({}, ["--set", "algo_kwargs.n_steps=1.5"], ["'algo_kwargs.n_steps' must be an integer"]),
    ({}, ["--set", "seed"], ["is not of the form key.path=value"]),
    ({}, ["--set", "agent=lsmt"], ["unknown agent 'lsmt'", "did you mean 'lstm'"]),
    ({}, ["--set", "env.id=CTM/CartPoleNoVel-v0"], ["unknown env id 'CTM/CartPoleNoVel-v0'",
                                                    "did you mean 'CTM/CartPoleNoVel-v1'"]),
    ({}, ["--set", "env.id=MiniGrid-Empty-5x5-v0", "--set", "agent=mlp"],
     ["agent 'mlp' cannot read the observation key 'mission'", "ImgObsWrapper"]),
    ({}, ["--set", "env.id=CarRacing-v3"], ["cannot make env 'CarRacing-v3'"]),
    ({}, ["--set", "policy_kwargs.neuron_select_type=sideways"], ["cannot build agent 'ctm'",
                                                                   "neuron_select_type"]),
    ({}, ["--device", "gpu0"], ["unknown device 'gpu0'"]),
])
def test_bad_configs_fail_cleanly_before_creating_the_run(tmp_path, capsys, changes, overrides, fragments):
    config = write_config(tmp_path, **changes)
    assert_clean_error(cli(capsys, "train", config, "--run-dir", tmp_path / "run", *overrides), *fragments)
    assert not (tmp_path / "run").exists()


def test_missing_files(tmp_path, capsys):
    assert_clean_error(cli(capsys, "train", tmp_path / "missing.yaml"), "config file not found")
    assert_clean_error(cli(capsys, "eval", tmp_path / "missing"), "no such run directory or model file")
    assert_clean_error(cli(capsys, "eval", tmp_path / "missing.pt"), "checkpoint not found")
    assert_clean_error(cli(capsys, "visualize", tmp_path / "missing.zip"),
                       "no such run directory or model file")
    assert_clean_error(cli(capsys, "train", "--resume", tmp_path), "is not a run directory")
    assert_clean_error(cli(capsys, "train", "--resume", tmp_path / "missing"), "run directory not found")


def test_an_existing_run_is_never_overwritten_without_overwrite(run_copy, tmp_path, capsys):
    before = snapshot(run_copy)
    config = write_config(tmp_path, total_timesteps=16)
    assert_clean_error(cli(capsys, "train", config, "--run-dir", run_copy), "already exists", "--overwrite",
                       f"--resume {run_copy}")
    assert snapshot(run_copy) == before
    assert cli(capsys, "train", config, "--run-dir", run_copy, "--overwrite", "--set", "eval.freq=0")[0] == 0
    assert not RunDir(run_copy).best_model.exists()  # the old run's files are gone


def test_overwrite_refuses_a_directory_that_is_not_a_run(tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    assert_clean_error(cli(capsys, "train", write_config(tmp_path), "--run-dir", precious, "--overwrite"),
                       "not a run directory: refusing to overwrite it")
    assert (precious / "thesis.tex").read_text() == "do not delete"


def test_corrupt_and_foreign_checkpoints(run_copy, tmp_path, capsys):
    garbage_pt = tmp_path / "garbage.pt"
    garbage_pt.write_bytes(b"\x00 not a checkpoint")
    assert_clean_error(cli(capsys, "eval", garbage_pt), "cannot read", "as an authors' checkpoint")
    foreign_pt = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign_pt)
    assert_clean_error(cli(capsys, "eval", foreign_pt), "has no 'model_state_dict'")

    run = RunDir(run_copy)
    run.final_model.write_bytes(b"PK\x03\x04 truncated zip")
    assert_clean_error(cli(capsys, "eval", run_copy), "cannot load", "final_model.zip", "as a 'ctm' model")
    config = replace(load_config(run.config), agent="mlp")
    foreign, _ = build_model(config, make_env(config, get_agent("mlp"), n_envs=1, seed=0, training=False))
    foreign.save(run.best_model)  # a PPO model where the CTM's best model should be
    run.final_model.unlink()
    assert_clean_error(cli(capsys, "eval", run_copy), "best_model.zip", "as a 'ctm' model")

    latest = run.latest_checkpoint()[1]
    latest.write_bytes(b"garbage")
    assert_clean_error(cli(capsys, "train", "--resume", run_copy, "--total-timesteps", 256), "cannot load",
                       latest.name)

    stray = tmp_path / "stray.zip"
    shutil.copy(RunDir(run_copy).checkpoint(64), stray)
    assert_clean_error(cli(capsys, "eval", stray), "not in a run directory")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert_clean_error(cli(capsys, "eval", notes), "expected a run directory, a model .zip")


def test_resume_cannot_change_the_experiment(run_copy, tmp_path, capsys):
    assert_clean_error(cli(capsys, "train", write_config(tmp_path), "--resume", run_copy, "--seed", 2),
                       "CONFIG, --seed cannot be given with it")
    assert_clean_error(cli(capsys, "train"), "train needs a CONFIG file (or --resume RUN_DIR)")
    for checkpoint in RunDir(run_copy).checkpoints.iterdir():
        checkpoint.unlink()
    assert_clean_error(cli(capsys, "train", "--resume", run_copy, "--total-timesteps", 256),
                       "has no checkpoint to resume from")


def test_bad_video_format_fails_before_evaluating(run_dir, tmp_path, capsys):
    assert_clean_error(cli(capsys, "eval", run_dir, "--video", tmp_path / "film.avi"), "cannot write video",
                       "format must be one of")


def test_usage_errors_exit_2_without_traceback(capsys):
    code, _, err = cli(capsys, "train", "--episodes", 3)
    assert code == 2 and "unrecognized arguments: --episodes" in err and "Traceback" not in err
    code, _, err = cli(capsys, "eval", "x", "--deterministic", "--stochastic")
    assert code == 2 and "not allowed with argument" in err
    assert cli(capsys, "--version")[0] == 0


def test_an_evaluation_gives_up_when_training_is_told_to_stop(run_dir):
    loaded = load_agent(run_dir, seed=0, device="cpu")
    calls = []

    def stop_on_third_step() -> bool:
        calls.append(None)
        return len(calls) >= 3

    with pytest.raises(EvaluationStopped):
        evaluate(loaded.model, loaded.env, n_episodes=5, should_stop=stop_on_third_step)
    assert len(calls) == 3
    assert len(evaluate(loaded.model, loaded.env, n_episodes=2).returns) == 2


def test_atomic_save_keeps_the_previous_file_when_saving_fails(tmp_path):
    path = tmp_path / "model.zip"
    path.write_bytes(b"previous")

    def failing_save(temporary: str) -> None:
        Path(temporary).write_bytes(b"half written")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_save(path, failing_save)
    assert path.read_bytes() == b"previous" and os.listdir(tmp_path) == ["model.zip"]
    atomic_save(path, lambda temporary: Path(temporary).write_bytes(b"new"))
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["model.zip"]


def test_atomic_save_gives_the_permissions_of_a_plainly_written_file(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("x")
    atomic_save(tmp_path / "atomic.csv", lambda temporary: Path(temporary).write_text("x"))
    assert (tmp_path / "atomic.csv").stat().st_mode == plain.stat().st_mode
