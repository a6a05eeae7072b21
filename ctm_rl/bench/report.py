"""Aggregate the runs of a benchmark: ``results.csv``, ``summary.md`` and ``curves_<env>.png``.

Curves are aligned by evaluation index (the k-th evaluation of every seed), which is the same step for
every seed of one config; where seeds stopped after different numbers of evaluations the curve is cut to
the shortest.  "Final" means each seed's last evaluation.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from ctm_rl.bench import stats
from ctm_rl.bench.harness import RunResult, slug
from ctm_rl.bench.stats import bootstrap_ci, curve_ci, first_step_reaching
from ctm_rl.runs import EVALUATION_FIELDS, RunDir, atomic_save, atomic_write_text
from envs.navigation import oracle_mean_return

RESULT_FIELDS = ("agent", "env", "seed", *EVALUATION_FIELDS)
ORACLE_EPISODES = 50  # seeded episodes behind the oracle's mean return (the plots' ceiling)


def read_evaluations(run_dir: Path) -> list[dict[str, str]]:
    """The rows of a run's ``evaluations.csv`` (none if it has none)."""
    path = RunDir(run_dir).evaluations
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def collect_rows(results: Sequence[RunResult]) -> list[dict[str, object]]:
    """Every evaluation row of every usable run, tagged with its agent, env and seed."""
    rows = []
    for result in results:
        if result.status in ("failed", "stopped"):
            continue
        task = result.task
        for row in read_evaluations(task.run_dir):
            rows.append({"agent": task.agent, "env": task.env_id, "seed": task.seed,
                         **{field: row.get(field, "") for field in EVALUATION_FIELDS}})
    return rows


def write_results_csv(rows: Sequence[Mapping[str, object]], path: Path) -> None:
    def save(temporary: str) -> None:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=RESULT_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    atomic_save(path, save)


@dataclass(frozen=True)
class Curves:
    """One agent's evaluation curves on one env: ``returns[seed_index, k]`` at ``steps[k]``."""

    seeds: list[int]
    steps: np.ndarray
    returns: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        return self.returns.mean(axis=0)

    @property
    def final(self) -> np.ndarray:
        return self.returns[:, -1]


def align_curves(rows: Sequence[Mapping[str, object]], field: str = "mean_return") -> Curves | None:
    """The curves of ``field`` (an evaluation column) in the rows of one (agent, env), or ``None`` if no seed
    has a value of it (``success_rate`` is empty where the env reports no success)."""
    by_seed: dict[int, list[tuple[int, float]]] = {}
    for row in rows:
        if row.get(field) not in (None, ""):
            by_seed.setdefault(int(row["seed"]), []).append((int(row["timesteps"]), float(row[field])))
    if not by_seed:
        return None
    seeds = sorted(by_seed)
    points = min(len(by_seed[seed]) for seed in seeds)
    table = np.array([sorted(by_seed[seed])[:points] for seed in seeds], dtype=float)  # seeds x points x 2
    steps = np.median(table[:, :, 0], axis=0).astype(int)
    return Curves(seeds, steps, table[:, :, 1])


def default_threshold(env_id: str) -> float | None:
    """The env's registered ``reward_threshold`` (e.g. 475 for CartPole-v1), if any."""
    try:
        return gym.spec(env_id).reward_threshold
    except gym.error.Error:
        return None


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def return_digits(returns: np.ndarray) -> int:
    """Decimals to show: 2 for returns within [-1, 1] (success-style rewards), else 1."""
    return 2 if np.abs(returns).max(initial=0.0) <= 1.0 else 1


def _mean_of(values: Sequence[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return sum(known) / len(known) if known else None


def summary_markdown(results: Sequence[RunResult], rows: Sequence[Mapping[str, object]],
                     thresholds: Mapping[str, float | None], ceilings: Mapping[str, float | None]) -> str:
    """The markdown report: per env, one line per agent; then one line per run."""
    agents = list(dict.fromkeys(result.task.agent for result in results))
    env_ids = list(dict.fromkeys(result.task.env_id for result in results))
    seeds = sorted({result.task.seed for result in results})
    lines = [
        "# Benchmark summary", "",
        (f"Agents: {', '.join(agents)}. Seeds: {', '.join(map(str, seeds))}. Final = each seed's last "
         "evaluation (mean return over its evaluation episodes). IQM = interquartile mean over seeds. "
         f"[95% CI]: percentile bootstrap over seeds, {stats.BOOTSTRAP_RESAMPLES} resamples, "
         f"seed {stats.BOOTSTRAP_SEED}. Steps to threshold: first evaluation step at which the mean over "
         "seeds reached the threshold. Params: the policy's parameter count. Oracle: the shortest-path "
         f"oracle's mean return over seeds 0..{ORACLE_EPISODES - 1}, the best an agent can do (navigation "
         "envs only). Success: each seed's last evaluation's share of episodes that reached the goal, where "
         "the env reports it."), "",
    ]
    for env_id in env_ids:
        threshold = thresholds.get(env_id)
        ceiling = ceilings.get(env_id)
        lines += [f"## {env_id}", "",
                  (f"Threshold: {_number(threshold) if threshold is not None else 'none'}. "
                   f"Oracle: {_number(ceiling, 3) if ceiling is not None else 'none'}."),
                  "",
                  ("| agent | params | seeds | final mean return [95% CI] | final IQM [95% CI] | "
                   "final success % IQM [95% CI] | steps to threshold | wall-clock s / run | steps/s / run |"),
                  "|---|---|---|---|---|---|---|---|---|"]
        for agent in agents:
            ours = [r for r in results if r.task.agent == agent and r.task.env_id == env_id]
            our_rows = [row for row in rows if row["agent"] == agent and row["env"] == env_id]
            curves = align_curves(our_rows)
            wall = _number(_mean_of([r.wall_s for r in ours]), 0)
            speed = _number(_mean_of([r.steps_per_s for r in ours]), 0)
            n_params = ours[0].task.n_params if ours else None
            params = f"{n_params:,}" if n_params is not None else "-"
            if curves is None:
                lines.append(f"| {agent} | {params} | 0 | no evaluations | - | - | - | {wall} | {speed} |")
                continue
            success = align_curves(our_rows, "success_rate")
            success_text = "-" if success is None else bootstrap_ci(100 * success.final, "iqm").format(0)
            digits = return_digits(curves.returns)
            reached = "-"
            if threshold is not None:
                step = first_step_reaching(curves.steps, curves.mean, threshold)
                reached = "not reached" if step is None else str(step)
            lines.append(f"| {agent} | {params} | {len(curves.seeds)} | "
                         f"{bootstrap_ci(curves.final, 'mean').format(digits)} | "
                         f"{bootstrap_ci(curves.final, 'iqm').format(digits)} | {success_text} | {reached} | "
                         f"{wall} | {speed} |")
        lines.append("")
    lines += ["## Runs", "",
              "| env | agent | seed | status | final return | timesteps | wall-clock s | steps/s |",
              "|---|---|---|---|---|---|---|---|"]
    for result in results:
        task = result.task
        evaluations = read_evaluations(task.run_dir) if result.status not in ("failed", "stopped") else []
        final = _number(float(evaluations[-1]["mean_return"]), 3) if evaluations else "-"
        lines.append(f"| {task.env_id} | {task.agent} | {task.seed} | {result.status} | {final} | "
                     f"{result.timesteps if result.timesteps is not None else '-'} | "
                     f"{_number(result.wall_s)} | {_number(result.steps_per_s, 0)} |")
    return "\n".join(lines) + "\n"


def plot_curves(env_id: str, curves: Mapping[str, Curves], threshold: float | None, ceiling: float | None,
                path: Path) -> None:
    """Mean evaluation return over seeds with its shaded 95% bootstrap CI, one line per agent; the
    threshold and the oracle's return (``ceiling``) as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display is needed or wanted
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    for agent, curve in curves.items():
        low, high = curve_ci(curve.returns, "mean")
        (line,) = axes.plot(curve.steps, curve.mean, marker="o", markersize=3,
                            label=f"{agent} ({len(curve.seeds)} seeds)")
        axes.fill_between(curve.steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    if threshold is not None:
        axes.axhline(threshold, color="grey", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    if ceiling is not None:
        axes.axhline(ceiling, color="black", linestyle=":", linewidth=1, label=f"oracle {ceiling:.3g}")
    axes.set(title=env_id, xlabel="env steps", ylabel="evaluation return (mean, 95% CI)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    atomic_save(path, lambda temporary: figure.savefig(temporary, dpi=100))
    plt.close(figure)


def write_report(results: Sequence[RunResult], out: Path, thresholds: Mapping[str, float | None]
                 ) -> list[Path]:
    """Write ``results.csv``, ``summary.md`` and one ``curves_<env>.png`` per env with curves; their paths."""
    rows = collect_rows(results)
    env_ids = list(dict.fromkeys(result.task.env_id for result in results))
    ceilings = {env_id: oracle_mean_return(env_id, ORACLE_EPISODES) for env_id in env_ids}
    written = [out / "results.csv", out / "summary.md"]
    write_results_csv(rows, written[0])
    atomic_write_text(written[1], summary_markdown(results, rows, thresholds, ceilings))
    for env_id in env_ids:
        agents = dict.fromkeys(result.task.agent for result in results if result.task.env_id == env_id)
        curves = {agent: c for agent in agents
                  if (c := align_curves([r for r in rows if r["agent"] == agent and r["env"] == env_id]))}
        if curves:
            path = out / f"curves_{slug(env_id)}.png"
            plot_curves(env_id, curves, thresholds.get(env_id), ceilings[env_id], path)
            written.append(path)
    return written
