"""Learning benchmark: train one config for several seeds and report sample efficiency.

    python benchmarks/learning.py configs/cartpole_masked.yaml --seeds 0 1 2 3 4 --workers 2 \
        --out runs/bench_cartpole --threshold 475

Every seed is an ordinary ``ctm-rl train`` run (its own process, one torch thread) in ``OUT/seed_S``;
a finished run (one with ``final_model.zip``) is not trained again, so the script can be re-run to resume.
It prints, per seed, the first evaluation step whose mean return reached the threshold, the best and
final evaluation returns and the wall-clock, then how many seeds reached the threshold.  Never run by CI.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def train(config: str, seed: int, run_dir: Path, extra: list[str]) -> float:
    """Run one seed to completion (skipped if already finished); returns its wall-clock in seconds."""
    if (run_dir / "final_model.zip").exists():
        return float("nan")
    command = [sys.executable, "-m", "ctm_rl.cli", "train", config, "--seed", str(seed), "--run-dir", str(run_dir),
               "--overwrite", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    start = time.perf_counter()
    with open(run_dir.parent / f"seed_{seed}.log", "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, env=env)
    return time.perf_counter() - start


def summarise(run_dir: Path, threshold: float) -> dict:
    with open(run_dir / "evaluations.csv", newline="") as handle:
        rows = [(int(r["timesteps"]), float(r["mean_return"])) for r in csv.DictReader(handle)]
    reached = next((step for step, value in rows if value >= threshold), None)
    return {"reached_at": reached, "best": max(v for _, v in rows), "final": rows[-1][1], "last_step": rows[-1][0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threshold", type=float, default=475.0)
    args, extra = parser.parse_known_args()  # unknown options go to `ctm-rl train` (e.g. --set ...)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = {seed: args.out / f"seed_{seed}" for seed in args.seeds}
    with ThreadPoolExecutor(args.workers) as pool:
        walls = dict(zip(runs, pool.map(lambda s: train(args.config, s, runs[s], extra), runs)))
    print(f"{'seed':>4} {'reached':>9} {'best':>7} {'final':>7} {'steps':>8} {'wall s':>7}")
    successes = 0
    for seed, run_dir in runs.items():
        result = summarise(run_dir, args.threshold)
        successes += result["reached_at"] is not None
        print(f"{seed:>4} {result['reached_at']!s:>9} {result['best']:>7.1f} {result['final']:>7.1f} "
              f"{result['last_step']:>8} {walls[seed]:>7.0f}")
    print(f"{successes}/{len(runs)} seeds reached a mean evaluation return >= {args.threshold}")


if __name__ == "__main__":
    main()
