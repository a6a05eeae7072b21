"""The memory comparison of docs/RESULTS.md (issue 19): success on the T-maze at each corridor length.

Copies the ``evaluations.csv`` of every finished run in the given ``ctm-rl benchmark`` output folders
(``benchmarks/memory.sh`` makes one per corridor length) to ``--out`` as ``L<N>_<agent>_seed<S>.csv``, so
that each finished run's result can be committed as it lands, then reports on every such file in ``--out``
(runs copied in earlier sessions too):

* ``summary.md``: per length and agent, the final success rate's IQM over seeds with its 95% bootstrap
  interval, each seed's final and best success, how many seeds reached the length's target within the
  budget, and the longest corridor on which each agent's IQM final success is >= 80%;
* ``horizon.png``: the memory-horizon plot, final success (IQM, 95% CI) against corridor length, one line
  per agent from scratch and one per agent's curriculum (warm-started stages, ``--label from_L<N>``);
* ``success_L<N>.png``: success curves (IQM over seeds, 95% CI) per length.

    python benchmarks/memory_report.py runs/memory/L* --out docs/results/memory
    python benchmarks/memory_report.py runs/memory_curriculum/L16 --prior-steps 1000000 --label from_L8 \
        --out docs/results/memory     # warm-started runs (init_from), their earlier stage's steps counted
    python benchmarks/memory_report.py runs/memory_curriculum/L32 --prior-steps 2000000 --label from_L16 \
        --out docs/results/memory     # the next stage, from those L16 runs
    python benchmarks/memory_report.py --out docs/results/memory     # from the committed CSVs only
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from ctm_rl.bench.report import Curves, align_curves
from ctm_rl.bench.stats import bootstrap_ci, curve_ci, iqm
from ctm_rl.runs import atomic_save, atomic_write_text

T = TypeVar("T")

# The targets: success within a budget, on >= 4 of 5 seeds.
TARGETS = {4: (0.95, 250_000), 8: (0.90, 1_000_000), 16: (0.80, 2_000_000)}
HORIZON_LEVEL = 0.8  # "the longest corridor on which an agent stays >= 80%"


RUN_PATTERN = re.compile(r"CTM-Memory-L(\d+)-v0/(\w+)/seed_(\d+)$")
COPY_PATTERN = re.compile(r"^L(\d+)_(\w+)_seed(\d+)\.csv$")
WARM_STARTED = re.compile(r"^(\w+?)_from_L\d+$")  # the --label of curriculum stages: ctm_from_L8, ...


def write_shifted(path: Path, rows: list[dict[str, str]], prior_steps: int) -> None:
    """Write evaluation ``rows`` to ``path`` with ``prior_steps`` added to each step count.

    Atomically: a committed result file is never left half-written by an interrupted report.
    """
    def save(temporary: str) -> None:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["timesteps"])
            writer.writeheader()
            writer.writerows({**row, "timesteps": int(row["timesteps"]) + prior_steps} for row in rows)

    atomic_save(path, save)


def copy_finished_runs(folder: Path, out: Path, prior_steps: int = 0, label: str = "") -> int:
    """Copy the evaluations of ``folder``'s finished memory runs to ``out``; how many were copied.

    :param prior_steps: env steps each run trained before it started (earlier curriculum stages, see the
        config key ``init_from``), added to its evaluation steps so that curves and budgets count them.
    :param label: appended to the agent's name (``ctm_<label>``), to tell such runs from runs from scratch.
    """
    copied = 0
    for run in sorted(folder.glob("runs/*/*/seed_*")):
        match = RUN_PATTERN.search(run.as_posix())
        if match and (run / "final_model.zip").is_file():
            length, agent, seed = match.groups()
            name = f"{agent}_{label}" if label else agent
            with (run / "evaluations.csv").open(newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            write_shifted(out / f"L{length}_{name}_seed{seed}.csv", rows, prior_steps)
            copied += 1
    return copied


def read_copies(out: Path) -> dict[int, list[dict[str, str]]]:
    """Every copied run's evaluation rows, tagged with agent and seed, by corridor length."""
    by_length: dict[int, list[dict[str, str]]] = {}
    for path in sorted(out.glob("L*_*_seed*.csv")):
        if match := COPY_PATTERN.match(path.name):
            length, agent, seed = match.groups()
            with path.open(newline="", encoding="utf-8") as handle:
                by_length.setdefault(int(length), []).extend(
                    {**row, "agent": agent, "seed": seed} for row in csv.DictReader(handle))
    return by_length


def success_curves(rows: Sequence[Mapping[str, str]]) -> dict[str, Curves]:
    agents = dict.fromkeys(row["agent"] for row in rows)
    return {agent: c for agent in agents
            if (c := align_curves([row for row in rows if row["agent"] == agent], "success_rate"))}


def seeds_on_target(curve: Curves, level: float, budget: int) -> int:
    """How many seeds have an evaluation due at or before ``budget`` steps with success >= ``level``.

    Due, not logged: an evaluation runs at the first step of all the envs past its due step (up to
    ``n_envs - 1`` later, e.g. 250,016 for 250,000 with 32 envs), so the logged steps are rounded to the
    nearest multiple of the evaluation spacing.
    """
    spacing = np.median(np.diff(curve.steps)) if len(curve.steps) > 1 else curve.steps[0]
    within = np.round(curve.steps / spacing) * spacing <= budget
    return int(np.sum(np.any(curve.returns[:, within] >= level - 1e-9, axis=1)))


def longest_at_level(finals: Mapping[int, float], level: float = HORIZON_LEVEL) -> int | None:
    """The longest corridor up to which every length's final success is >= ``level`` (the agent "stays"
    there), ``None`` if the shortest already misses it."""
    longest = None
    for length in sorted(finals):
        if finals[length] < level:
            break
        longest = length
    return longest


def with_curricula(by_agent: Mapping[str, Mapping[int, T]]) -> dict[str, dict[int, T]]:
    """``by_agent`` (agent -> length -> result) with each agent's warm-started stages (``<agent>_from_L<N>``,
    see ``--label``) joined into one ``<agent> curriculum`` entry: the agent's from-scratch results, each
    length that a stage trained on taking that stage's result instead.

    The curriculum starts from the from-scratch runs of the shorter corridors (the L8 runs that the L16
    stage starts from), so for the horizon it is one line: L4 and L8 from scratch, L16 from L8, L32 from L16.
    A stage whose agent has no from-scratch results is kept as it is.
    """
    lines = {}
    for name, results in by_agent.items():
        if (match := WARM_STARTED.match(name)) and match.group(1) in by_agent:
            lines.setdefault(f"{match.group(1)} curriculum", dict(by_agent[match.group(1)])).update(results)
        else:
            lines.setdefault(name, {}).update(results)
    return lines


def plot_success(length: int, curves: Mapping[str, Curves], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    for agent, curve in curves.items():
        low, high = curve_ci(100 * curve.returns, "iqm")
        (line,) = axes.plot(curve.steps, 100 * iqm(curve.returns, axis=0), marker="o", markersize=3,
                            label=f"{agent} ({len(curve.seeds)} seeds)")
        axes.fill_between(curve.steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    axes.axhline(50, color="grey", linestyle=":", linewidth=1, label="chance (either arm)")
    if length in TARGETS:
        level, budget = TARGETS[length]
        axes.plot([0, budget], [100 * level] * 2, color="black", linestyle="--", linewidth=1,
                  label=f"target {100 * level:.0f}% by {budget:,}")
    axes.set(title=f"CTM/Memory-L{length}-v0", xlabel="env steps", ylabel="success % (IQM over seeds, 95% CI)",
             ylim=(-3, 103))
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    atomic_save(path, lambda temporary: figure.savefig(temporary, dpi=100))
    plt.close(figure)


def plot_horizon(finals: Mapping[str, dict[int, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8.8, 4.0))
    colors = {}
    for agent, by_length in finals.items():
        lengths = sorted(by_length)
        estimates = [bootstrap_ci(100 * by_length[n], "iqm") for n in lengths]
        values = np.array([e.value for e in estimates])
        errors = np.array([[e.value - e.low for e in estimates], [e.high - e.value for e in estimates]])
        # An agent's curriculum line: its colour, dashed, nudged right so that where it shares the
        # from-scratch results (the short corridors) both lines stay visible.
        base, curriculum = agent.removesuffix(" curriculum"), agent.endswith(" curriculum")
        drawn = axes.errorbar(np.array(lengths) * (1.04 if curriculum else 1.0), values, yerr=errors, marker="o",
                              capsize=4, label=agent, color=colors.get(base), linestyle="--" if curriculum else "-")
        colors.setdefault(base, drawn.lines[0].get_color())
    axes.axhline(50, color="grey", linestyle=":", linewidth=1, label="chance (either arm)")
    axes.axhline(100 * HORIZON_LEVEL, color="black", linestyle="--", linewidth=1, label="80%")
    axes.set_xscale("log", base=2)
    axes.set(title="Memory horizon: T-maze success at the end of training", xlabel="corridor length L",
             ylabel="final success % (IQM over seeds, 95% CI)", ylim=(-3, 103))
    axes.set_xticks(sorted({n for by_length in finals.values() for n in by_length}))
    axes.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes.grid(alpha=0.3)
    # Outside the axes: with several agents and curricula, a legend inside covers the long corridors' points.
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    figure.tight_layout()
    atomic_save(path, lambda temporary: figure.savefig(temporary, dpi=100))
    plt.close(figure)


def summary(by_length: Mapping[int, dict[str, Curves]]) -> str:
    lines = ["# Memory comparison", "",
             ("Final = each seed's last evaluation (success share of its sampled episodes). IQM over seeds, "
              "[95% CI] percentile bootstrap over seeds. On target: seeds with an evaluation at or before the "
              "budget at or above the target level."), "",
             ("| L | agent | seeds | steps | final success % IQM [95% CI] | each seed's final % | each seed's best % "
              "| on target |"),
             "|---|---|---|---|---|---|---|---|"]
    iqm_finals: dict[str, dict[int, float]] = {}
    for length in sorted(by_length):
        for agent, curve in by_length[length].items():
            final = bootstrap_ci(100 * curve.final, "iqm")
            target = "-"
            if length in TARGETS:
                level, budget = TARGETS[length]
                target = (f"{seeds_on_target(curve, level, budget)} of {len(curve.seeds)} "
                          f"(>= {100 * level:.0f}% by {budget:,})")
            each_final = ", ".join(f"{100 * v:.0f}" for v in curve.final)
            each_best = ", ".join(f"{100 * v:.0f}" for v in curve.returns.max(axis=1))
            lines.append(f"| {length} | {agent} | {len(curve.seeds)} | {curve.steps[-1]:,} | {final.format(0)} | "
                         f"{each_final} | {each_best} | {target} |")
            iqm_finals.setdefault(agent, {})[length] = final.value / 100
    lines += ["", "Longest corridor with IQM final success >= 80%: "
              + "; ".join(f"{agent}: {f'L{n}' if (n := longest_at_level(by)) else 'none'}"
                          for agent, by in with_curricula(iqm_finals).items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path,
                        help="ctm-rl benchmark output folders whose finished runs to copy first")
    parser.add_argument("--out", type=Path, required=True, help="where the CSVs, summary and plots go")
    parser.add_argument("--prior-steps", type=int, default=0, metavar="N",
                        help="steps the copied runs trained in earlier curriculum stages (counted in their curves)")
    parser.add_argument("--label", default="", help="appended to the copied runs' agent names, e.g. from_L8")
    args = parser.parse_args(argv)
    if args.label and not re.fullmatch(r"\w+", args.label):
        parser.error("--label takes letters, digits and underscores only")
    args.out.mkdir(parents=True, exist_ok=True)
    for folder in args.folders:
        copied = copy_finished_runs(folder, args.out, args.prior_steps, args.label)
        print(f"memory_report: {copied} finished runs copied from {folder}")
    by_length: dict[int, dict[str, Curves]] = {}
    for length, rows in sorted(read_copies(args.out).items()):
        by_length[length] = success_curves(rows)
        plot_success(length, by_length[length], args.out / f"success_L{length}.png")
    if not by_length:
        print("memory_report: no results to report", file=sys.stderr)
        return 1
    finals: dict[str, dict[int, np.ndarray]] = {}
    for length, curves in by_length.items():
        for agent, curve in curves.items():
            finals.setdefault(agent, {})[length] = curve.final
    plot_horizon(with_curricula(finals), args.out / "horizon.png")
    atomic_write_text(args.out / "summary.md", summary(by_length))
    print(args.out / "summary.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
