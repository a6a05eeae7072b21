"""The figures and table of docs/REPRODUCTION.md (issue 20), from the CSVs that paper_runs.py copies.

For each task (``acrobot``, ``cartpole``, ...) with results in ``--results``, one figure
``curves_<task>.png`` with two panels, CTM against LSTM:

* the paper's own metric, training episode length (SB3's 100-episode running mean) against env steps;
* our periodic evaluation returns against env steps.

Each panel shows every seed as a thin line and the mean over seeds with its 95% percentile-bootstrap band
(up to the step every seed reached; an unfinished run, one still training or cut short, is listed with the
step it reached in the table).  ``summary.md`` has
per task and agent: the seeds and the steps each reached, the final evaluation return and the final
training episode length (mean over seeds, 95% CI), and the wall-clock per run.

    python benchmarks/paper_report.py --results docs/results/paper --out docs/results/paper
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctm_rl.bench.stats import bootstrap_ci, curve_ci
from ctm_rl.runs import atomic_save, atomic_write_text

REPO = Path(__file__).resolve().parent.parent
FILE_PATTERN = re.compile(r"^(\w+?)_(ctm|lstm)_seed(\d+)_evaluations\.csv$")
GRID_POINTS = 200  # training curves are put on a common step grid to average over seeds


@dataclass
class Run:
    task: str
    agent: str
    seed: int
    eval_steps: np.ndarray
    eval_returns: np.ndarray
    train_steps: np.ndarray
    train_lengths: np.ndarray
    wall_s: float | None

    @property
    def steps(self) -> int:
        return int(max(self.eval_steps.max(initial=0), self.train_steps.max(initial=0)))


def _columns(path: Path, *names: str) -> list[np.ndarray]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if all(row.get(name) not in (None, "") for name in names)]
    return [np.array([float(row[name]) for row in rows]) for name in names]


def read_runs(results: Path) -> list[Run]:
    runs = []
    for path in sorted(results.glob("*_evaluations.csv")):
        if not (match := FILE_PATTERN.match(path.name)):
            continue
        task, agent, seed = match.group(1), match.group(2), int(match.group(3))
        stem = path.name.removesuffix("_evaluations.csv")
        eval_steps, eval_returns = _columns(path, "timesteps", "mean_return")
        training = results / f"{stem}_training.csv"
        train_steps, train_lengths = (_columns(training, "timesteps", "ep_len_mean") if training.is_file()
                                      else (np.zeros(0), np.zeros(0)))
        wall_path = results / f"{stem}_wall.json"
        wall = json.loads(wall_path.read_text(encoding="utf-8"))["wall_s"] if wall_path.is_file() else None
        runs.append(Run(task, agent, seed, eval_steps, eval_returns, train_steps, train_lengths, wall))
    return runs


def paper_budget(task: str) -> int:
    """The paper config's ``total_timesteps`` for ``task`` (a run with fewer steps was cut short)."""
    from ctm_rl.config import load_config

    return load_config(REPO / "configs" / "paper" / f"{task}.yaml").total_timesteps


def _band(axes, steps: np.ndarray, table: np.ndarray, label: str, color: str) -> None:
    """Mean over the rows of ``table`` with its bootstrap band; each row as a thin line."""
    for row in table:
        axes.plot(steps, row, color=color, alpha=0.25, linewidth=0.8)
    if len(table) > 1:
        low, high = curve_ci(table, "mean")
        axes.fill_between(steps, low, high, color=color, alpha=0.2, linewidth=0)
    axes.plot(steps, table.mean(axis=0), color=color, linewidth=1.8, label=label)


def plot_task(task: str, runs: Sequence[Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    colors = {"ctm": "tab:blue", "lstm": "tab:orange"}
    for agent in ("ctm", "lstm"):
        ours = [run for run in runs if run.agent == agent]
        if not ours:
            continue
        label = f"{agent} ({len(ours)} seed{'s' if len(ours) > 1 else ''})"
        with_training = [run for run in ours if run.train_steps.size]
        if with_training:
            end = min(run.train_steps.max() for run in with_training)
            grid = np.linspace(max(run.train_steps.min() for run in with_training), end, GRID_POINTS)
            table = np.array([np.interp(grid, run.train_steps, run.train_lengths) for run in with_training])
            _band(left, grid, table, label, colors[agent])
        points = min(run.eval_steps.size for run in ours)
        steps = np.median([run.eval_steps[:points] for run in ours], axis=0)
        _band(right, steps, np.array([run.eval_returns[:points] for run in ours]), label, colors[agent])
    left.set(title=f"{task}: training episode length (the paper's metric)", xlabel="env steps",
             ylabel="episode length (100-episode mean)")
    right.set(title=f"{task}: evaluation return", xlabel="env steps", ylabel="mean return (mean over seeds)")
    for axes in (left, right):
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    figure.tight_layout()
    atomic_save(path, lambda temporary: figure.savefig(temporary, dpi=100))
    plt.close(figure)


def summary(runs: Sequence[Run]) -> str:
    lines = ["# Paper runs", "",
             ("Final evaluation: each seed's last periodic evaluation. Final training length: each seed's last "
              "100-episode mean. Mean over seeds [95% percentile bootstrap CI over seeds]."), "",
             ("| task | agent | seeds (steps reached of the paper's budget) | final evaluation return "
              "| final training episode length | best evaluation return (mean) | wall-clock h / run | steps/s |"),
             "|---|---|---|---|---|---|---|---|"]
    for task in dict.fromkeys(run.task for run in runs):
        for agent in ("ctm", "lstm"):
            ours = sorted((run for run in runs if run.task == task and run.agent == agent), key=lambda r: r.seed)
            if not ours:
                continue
            budget = paper_budget(task)
            reached = ", ".join(f"{run.seed} ({run.steps:,}" + (f" of {budget:,}: unfinished" if run.steps < budget * 0.99
                                                                else "") + ")" for run in ours)
            # returns within (-10, 10) (Four Rooms' discounted goal reward) need two decimals to show at all
            digits = 1 if max(np.abs(run.eval_returns).max() for run in ours) >= 10 else 2
            final_eval = bootstrap_ci([run.eval_returns[-1] for run in ours]).format(digits)
            lengths = [run.train_lengths[-1] for run in ours if run.train_lengths.size]
            final_length = bootstrap_ci(lengths).format(1) if lengths else "-"
            best = np.mean([run.eval_returns.max() for run in ours])
            walls = [run.wall_s for run in ours if run.wall_s]
            wall = f"{np.mean(walls) / 3600:.2f}" if walls else "-"
            speed = (f"{np.mean([run.steps / run.wall_s for run in ours if run.wall_s]):.0f}" if walls else "-")
            lines.append(f"| {task} | {agent} | {reached} | {final_eval} | {final_length} | {best:.{digits}f} | {wall} | "
                         f"{speed} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("docs/results/paper"), help="paper_runs.py's CSVs")
    parser.add_argument("--out", type=Path, default=Path("docs/results/paper"), help="where figures and summary go")
    args = parser.parse_args(argv)
    runs = read_runs(args.results)
    if not runs:
        print(f"paper_report: no runs in {args.results}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for task in dict.fromkeys(run.task for run in runs):
        plot_task(task, [run for run in runs if run.task == task], args.out / f"curves_{task}.png")
    atomic_write_text(args.out / "summary.md", summary(runs))
    print(args.out / "summary.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
