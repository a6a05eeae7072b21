"""The headline table of docs/RESULTS.md: final IQM [95% CI] per env (rows) and agent (columns), from the
``results.csv`` of one or more ``ctm-rl benchmark`` output folders.

    python benchmarks/results_table.py runs/results/classic runs/results/grid runs/results/minigrid

Digits follow the env's scale (success-style returns in [0, 1] get 2 decimals).  Never run by CI.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from ctm_rl.bench.report import align_curves, return_digits
from ctm_rl.bench.stats import bootstrap_ci


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="ctm-rl benchmark --out folders")
    args = parser.parse_args()
    rows = []
    for folder in args.folders:
        with (folder / "results.csv").open(newline="", encoding="utf-8") as handle:
            rows += list(csv.DictReader(handle))
    agents = list(dict.fromkeys(row["agent"] for row in rows))
    env_ids = list(dict.fromkeys(row["env"] for row in rows))
    print("| env | " + " | ".join(agents) + " |")
    print("|---|" + "---|" * len(agents))
    for env_id in env_ids:
        cells = []
        for agent in agents:
            curves = align_curves([row for row in rows if row["agent"] == agent and row["env"] == env_id])
            if curves is None:
                cells.append("-")
                continue
            digits = return_digits(curves.returns)
            cells.append(f"{bootstrap_ci(curves.final, 'iqm').format(digits)} ({len(curves.seeds)})")
        print(f"| {env_id} | " + " | ".join(cells) + " |")
    # Envs that report success (the navigation envs): each seed's last success rate, mean over seeds.
    successes = {}
    for env_id in env_ids:
        for agent in agents:
            ours = [row for row in rows if row["agent"] == agent and row["env"] == env_id and row["success_rate"]]
            last = {}
            for row in sorted(ours, key=lambda row: int(row["timesteps"])):
                last[row["seed"]] = float(row["success_rate"])
            if last:
                successes[env_id, agent] = sum(last.values()) / len(last)
    success_envs = list(dict.fromkeys(env_id for env_id, _ in successes))
    if success_envs:
        print("\n| env (final success rate, mean over seeds) | " + " | ".join(agents) + " |")
        print("|---|" + "---|" * len(agents))
        for env_id in success_envs:
            cells = [f"{successes[env_id, agent]:.0%}" if (env_id, agent) in successes else "-" for agent in agents]
            print(f"| {env_id} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
