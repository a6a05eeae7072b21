"""Learning curves of several ``benchmarks/learning.py`` outputs in one table and figure, e.g. full vs chunked BPTT.

    python benchmarks/learning_compare.py runs/paper_full runs/paper_chunk20 \
        --labels "full BPTT,20-step chunks" --threshold 195 --title "masked CartPole, paper setting" \
        --plot docs/img/bptt_paper_full_vs_chunk20.png

Each folder holds ``seed_S/evaluations.csv`` files.  Prints, per folder, the seeds' mean evaluation return at
every evaluation step and the first step where that mean reached the threshold; ``--plot`` draws the means
with their 95% bootstrap intervals (the same figure as ``ctm-rl benchmark``'s).  Never run by CI.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ctm_rl.bench.report import align_curves, plot_curves, read_evaluations
from ctm_rl.bench.stats import first_step_reaching


def curves_of(folder: Path):
    """The aligned evaluation curves of every ``seed_S`` run in ``folder``, or None when it has none."""
    rows = []
    for run_dir in sorted(folder.glob("seed_*")):
        seed = run_dir.name.removeprefix("seed_")
        if run_dir.is_dir() and seed.isdigit():
            rows += [{**row, "seed": int(seed)} for row in read_evaluations(run_dir)]
    return align_curves(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+", help="learning.py --out folders")
    parser.add_argument("--labels", help="comma-separated, one per folder (default: the folder names)")
    parser.add_argument("--threshold", type=float, help="return for 'first step reaching it'")
    parser.add_argument("--title", default="", help="the figure's title")
    parser.add_argument("--plot", type=Path, help="write the figure here (PNG)")
    args = parser.parse_args()
    labels = args.labels.split(",") if args.labels else [folder.name for folder in args.folders]
    if len(labels) != len(args.folders):
        parser.error(f"{len(labels)} labels for {len(args.folders)} folders")
    curves = {}
    for label, folder in zip(labels, args.folders):
        curve = curves_of(folder)
        if curve is None:
            parser.error(f"{folder}: no seed_*/evaluations.csv there")
        curves[label] = curve
    for label, curve in curves.items():
        print(f"{label} ({len(curve.seeds)} seeds)")
        if args.threshold is not None:
            reached = first_step_reaching(curve.steps, curve.mean, args.threshold)
            print(f"  first step with mean >= {args.threshold}: {reached}")
        print("  " + "  ".join(f"{step // 1000}k {value:.1f}" for step, value in zip(curve.steps, curve.mean)))
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot_curves(args.title, curves, args.threshold, None, args.plot)
        print(f"figure: {args.plot}")


if __name__ == "__main__":
    main()
