"""``ctm-rl benchmark``: the harness end to end on a tiny budget, resuming, the statistics, bad input."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ctm_rl.bench.report import align_curves
from ctm_rl.bench.stats import bootstrap_ci, curve_ci, first_step_reaching, iqm
from ctm_rl.cli import main
from ctm_rl.runs import RunDir

# Two agents, two seeds, 192 steps, an evaluation every 64: each run takes seconds.
TINY_OPTIONS = [
    "--set", "env.n_envs=2", "--set", "algo_kwargs.n_steps=32", "--set", "algo_kwargs.batch_size=32",
    "--set", "algo_kwargs.n_epochs=1", "--set", "eval.freq=64", "--set", "eval.n_episodes=2",
    "--set", "policy_kwargs.d_model=8", "--set", "policy_kwargs.d_input=8",
    "--set", "policy_kwargs.n_synch_out=4", "--set", "policy_kwargs.memory_length=3",
    "--set", "policy_kwargs.memory_hidden_dims=2", "--set", "policy_kwargs.iterations=1",
]
ENV = "CTM/CartPoleNoVel-v1"


def benchmark_args(out: Path, *extra: str) -> list[str]:
    return ["benchmark", "--agents", "mlp,ctm", "--envs", ENV, "--seeds", "2", "--total-timesteps", "192",
            "--workers", "2", "--out", str(out), *TINY_OPTIONS, *extra]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A benchmark run once for the module's tests."""
    out = tmp_path_factory.mktemp("bench") / "out"
    assert main(benchmark_args(out, "--threshold", "10")) == 0
    return out


def final_models(out: Path) -> list[Path]:
    return sorted(out.glob("runs/*/*/seed_*/final_model.zip"))


def test_benchmark_writes_results_summary_and_curves(finished: Path) -> None:
    assert len(final_models(finished)) == 4  # 2 agents x 2 seeds
    with (finished / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {(row["agent"], row["env"], row["seed"]) for row in rows} == {
        (agent, ENV, seed) for agent in ("mlp", "ctm") for seed in ("0", "1")}
    assert sorted({int(row["timesteps"]) for row in rows}) == [64, 128, 192]
    summary = (finished / "summary.md").read_text()
    assert f"## {ENV}" in summary
    assert re.search(r"\| mlp \| [\d,]+ \| 2 \|", summary) and re.search(r"\| ctm \| [\d,]+ \| 2 \|", summary)
    assert "Threshold: 10.0" in summary
    assert (finished / "curves_CTM-CartPoleNoVel-v1.png").stat().st_size > 0


def test_rerun_skips_finished_runs(finished: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = {path: path.stat().st_mtime_ns for path in final_models(finished)}
    capsys.readouterr()
    assert main(benchmark_args(finished)) == 0
    assert "4 of 4 runs already finished: skipped" in capsys.readouterr().out
    assert {path: path.stat().st_mtime_ns for path in final_models(finished)} == before
    assert "| skipped |" in (finished / "summary.md").read_text()


def assert_one_error_line(code: int, capsys: pytest.CaptureFixture[str], expected: str) -> None:
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("ctm-rl: error: ") and expected in err, err


def test_rerun_with_another_config_is_an_error(finished: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = benchmark_args(finished)
    args[args.index("--total-timesteps") + 1] = "256"
    capsys.readouterr()
    assert_one_error_line(main(args), capsys, "another config")


@pytest.mark.parametrize(("change", "expected"), [
    (("--agents", "mlp,cmt"), "unknown agent 'cmt'"),
    (("--envs", "CTM/CartPoleNoVel-v9"), "unknown env id"),
    (("--seeds", "0"), "--seeds must be a positive integer"),
    (("--workers", "-1"), "--workers must be a positive integer"),
    (("--threshold", "Pong=3"), "is not one of --envs"),
    (("--set", "algo_kwargs.n_stepz=3"), "unknown option 'algo_kwargs.n_stepz'"),
    (("--config", "lstm=configs/quickstart.yaml"), "'lstm' is not one of --agents"),
])
def test_bad_input_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     change: tuple[str, str], expected: str) -> None:
    args = benchmark_args(tmp_path / "out")
    flag, value = change
    if flag in args and flag != "--set":
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    assert_one_error_line(main(args), capsys, expected)
    assert not (tmp_path / "out").exists()  # nothing is written before every input is checked


# --- parameter matching, oracle ceiling, Ray -------------------------------------------------------------


def test_match_params_sizes_the_other_agents_like_the_ctm(tmp_path: Path) -> None:
    from ctm_rl.bench.harness import base_configs, plan

    tasks = plan(["ctm", "lstm", "mlp"], [ENV], [0], tmp_path, base_configs([], ["ctm", "lstm", "mlp"]),
                 TINY_OPTIONS[1::2],
                 192, match_params="ctm")
    counts = {task.agent: task.n_params for task in tasks}
    configs = {task.agent: task.config["policy_kwargs"] for task in tasks}
    assert configs["ctm"]["d_model"] == 8 and "lstm_hidden_size" not in configs["ctm"]
    assert configs["lstm"]["lstm_hidden_size"] >= 1 and len(configs["mlp"]["net_arch"]) == 2
    for agent in ("lstm", "mlp"):  # one unit of width changes the count by a few percent at this size
        assert abs(counts[agent] - counts["ctm"]) <= 0.05 * counts["ctm"], counts
    unmatched = {t.agent: t.n_params for t in plan(["ctm", "lstm"], [ENV], [0], tmp_path,
                                                   base_configs([], ["ctm", "lstm"]), TINY_OPTIONS[1::2], 192)}
    assert unmatched["ctm"] == counts["ctm"] and unmatched["lstm"] > 10 * counts["ctm"]  # default 256 units


def test_each_agent_can_have_its_own_base_config(tmp_path: Path) -> None:
    from ctm_rl.bench.harness import base_configs, plan

    for name, rate in (("ctm", 3e-4), ("common", 7e-4)):
        (tmp_path / f"{name}.yaml").write_text(f"agent: ctm\nalgo_kwargs: {{learning_rate: {rate}}}\n")
    bases = base_configs([str(tmp_path / "common.yaml"), f"ctm={tmp_path / 'ctm.yaml'}"], ["ctm", "mlp"])
    tasks = plan(["ctm", "mlp"], [ENV], [0], tmp_path, bases, TINY_OPTIONS[1::2], 192)
    assert {task.agent: task.config["algo_kwargs"]["learning_rate"] for task in tasks} == {"ctm": 3e-4,
                                                                                         "mlp": 7e-4}


def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    out = tmp_path / "out"
    args = ["benchmark", "--agents", "mlp", "--envs", ENV, "--seeds", "1", "--total-timesteps", "192",
            "--workers", "1", "--out", str(out), *TINY_OPTIONS, "--set", "checkpoint_freq=64"]
    assert main(args) == 0
    run = out / "runs" / "CTM-CartPoleNoVel-v1" / "mlp" / "seed_0"
    # As if killed after its first checkpoint: later checkpoints and the final model are gone, but the
    # evaluations after step 64 were written.
    (run / "final_model.zip").unlink()
    for checkpoint in run.glob("checkpoints/model_*_steps*"):
        if not checkpoint.name.startswith("model_64_steps"):
            checkpoint.unlink()
    assert main(args) == 0
    assert "resuming" in (out / "logs" / "CTM-CartPoleNoVel-v1_mlp_seed_0.log").read_text()
    timing = json.loads((run / "benchmark.json").read_text())
    assert timing["resumed_at"] == 64 and timing["timesteps"] == 128
    with (run / "evaluations.csv").open(newline="") as handle:
        assert [int(row["timesteps"]) for row in csv.DictReader(handle)] == [64, 128, 192]  # none twice


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_signal_to_the_benchmark_stops_its_workers_with_checkpoints(tmp_path: Path, signum: int) -> None:
    out = tmp_path / "out"
    command = [sys.executable, "-m", "ctm_rl.cli", "benchmark", "--agents", "mlp", "--envs", ENV, "--seeds", "2",
               "--total-timesteps", str(10**7), "--workers", "1", "--out", str(out), *TINY_OPTIONS,
               "--set", "eval.freq=0", "--set", "checkpoint_freq=32"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    first, second = (RunDir(out / "runs" / "CTM-CartPoleNoVel-v1" / "mlp" / f"seed_{seed}") for seed in (0, 1))
    try:
        deadline = time.monotonic() + 120
        while first.latest_checkpoint() is None:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.2)
        process.send_signal(signum)  # to the benchmark process only, as `kill` or a job scheduler does
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130 and "Traceback" not in err and "interrupted" in err
    log = (out / "logs" / "CTM-CartPoleNoVel-v1_mlp_seed_0.log").read_text()
    steps, _ = first.latest_checkpoint()
    assert f"stopped at step {steps}" in log  # the worker saved where it stopped ...
    time.sleep(2)
    assert first.latest_checkpoint()[0] == steps  # ... and trains no more,
    assert not second.root.exists()  # nor starts the queued run


def test_summary_reports_parameter_counts(finished: Path) -> None:
    summary = (finished / "summary.md").read_text()
    assert "| agent | params |" in summary
    assert "Oracle: none." in summary  # CartPole has no shortest-path oracle


def test_oracle_ceiling_of_navigation_envs() -> None:
    from envs.navigation import oracle_mean_return

    # The memory corridor's step limit makes the oracle's return 0.91 at every length (docs/ENVS.md).
    assert oracle_mean_return("CTM/Memory-L4-v0", episodes=5) == pytest.approx(0.91, abs=1e-6)
    assert oracle_mean_return(ENV) is None


def test_ray_path_trains_the_same_runs_into_the_same_layout(
        tmp_path: Path, finished: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # a local Ray instance
    try:
        out = tmp_path / "ray"
        assert main(benchmark_args(out, "--threshold", "10", "--ray-address", "auto")) == 0
        assert "as Ray tasks" in capsys.readouterr().out
    finally:
        ray.shutdown()
    assert [p.relative_to(out) for p in final_models(out)] == [p.relative_to(finished)
                                                               for p in final_models(finished)]
    assert len(list((out / "logs").glob("*.log"))) == 4
    local, remote = ((d / "results.csv").read_text().splitlines() for d in (finished, out))
    # Same seeds, same configs: the same evaluation returns (the time column aside).
    assert [line.rsplit(",", 1)[0] for line in remote] == [line.rsplit(",", 1)[0] for line in local]
    assert main(benchmark_args(out, "--ray-address", "auto")) == 0  # finished runs are skipped
    assert "4 of 4 runs already finished: skipped" in capsys.readouterr().out


def test_ray_address_without_a_cluster_is_one_error_line(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray")
    code = main(benchmark_args(tmp_path / "out", "--ray-address", "127.0.0.1:1"))
    assert_one_error_line(code, capsys, "cannot connect to the Ray cluster")


# --- statistics -----------------------------------------------------------------------------------------


def test_iqm_is_the_mean_of_the_middle_half() -> None:
    values = [1, 2, 3, 4, 100, 5, 6, 7]
    assert iqm(values) == pytest.approx(np.mean([3, 4, 5, 6]))
    assert iqm([1, 2, 3]) == pytest.approx(2.0)  # fewer than 4 values: nothing is trimmed
    assert iqm([[1, 2, 3, 4, 100, 5, 6, 7], [0] * 8], axis=1) == pytest.approx([4.5, 0.0])


def test_bootstrap_ci_contains_the_estimate_and_is_seeded() -> None:
    values = [1, 2, 3, 4, 100, 5, 6, 7]
    estimate = bootstrap_ci(values, "iqm")
    assert estimate.value == pytest.approx(4.5)
    assert estimate.low <= estimate.value <= estimate.high
    assert estimate.low >= 1 and estimate.high <= 100
    assert bootstrap_ci(values, "iqm") == estimate  # same seed, same interval
    assert bootstrap_ci(values, "iqm", seed=1) != estimate
    mean = bootstrap_ci(values, "mean")
    assert mean.value == pytest.approx(np.mean(values)) and mean.high > estimate.high  # the outlier counts
    assert bootstrap_ci([3.0], "mean").format() == "3.0 [3.0, 3.0]"


def test_curve_ci_brackets_the_mean_at_every_point() -> None:
    table = np.array([[0.0, 10.0, 20.0], [2.0, 14.0, 30.0], [4.0, 12.0, 25.0]])
    low, high = curve_ci(table)
    assert np.all(low <= table.mean(axis=0)) and np.all(table.mean(axis=0) <= high)
    assert np.all(low >= table.min(axis=0)) and np.all(high <= table.max(axis=0))


def test_sample_efficiency_is_the_first_step_where_the_seed_mean_reaches_the_threshold() -> None:
    rows = [{"seed": seed, "timesteps": step, "mean_return": value}
            for seed, curve in ((0, [10, 50, 90, 100]), (1, [30, 70, 60, 100]))
            for step, value in zip((100, 200, 300, 400), curve)]
    curves = align_curves(rows)
    assert curves is not None
    assert curves.steps.tolist() == [100, 200, 300, 400]
    assert curves.mean.tolist() == [20, 60, 75, 100]
    assert first_step_reaching(curves.steps, curves.mean, 60) == 200
    assert first_step_reaching(curves.steps, curves.mean, 75.5) == 400
    assert first_step_reaching(curves.steps, curves.mean, 101) is None
    shorter = align_curves([row for row in rows if not (row["seed"] == 1 and row["timesteps"] == 400)])
    assert shorter is not None and shorter.returns.shape == (2, 3)  # cut to the shortest seed
