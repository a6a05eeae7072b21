"""The paper's RL experiments (issue 20): every run of ``configs/paper/*.yaml``, CTM and LSTM, resumable.

One process works through a queue of (task, agent, seed) runs, in an order that gets every task and
agent one seed before any gets a second.  A finished run (``final_model.zip``) is skipped, a stopped one
is resumed from its latest checkpoint (``ctm-rl train --resume``), one without a checkpoint is started.  After each finished run its small
result files are copied to ``--results`` for committing: ``evaluations.csv`` (the periodic evaluations)
``training.csv`` (the training episode length and return, SB3's 100-episode running means, as
TensorBoard logged them: the paper's own metric is training episode length) and ``wall.json`` (the
training wall-clock: the sum over the run's TensorBoard event files, one per start or resume, of the time
from its first to its last event, so that the pauses between sessions do not count).

The CTM runs use the config files unchanged.  The LSTM runs are the same file with ``agent=lstm`` and
``lstm_hidden_size`` set so that the LSTM's parameter count is the closest it gets to the CTM's (what
``ctm-rl benchmark --match-params ctm`` does).

    python benchmarks/paper_runs.py --out runs/paper --results docs/results/paper
    python benchmarks/paper_runs.py --only cartpole:ctm:0 --only acrobot:lstm:1   # some runs only
    python benchmarks/paper_runs.py --copy-only      # results so far of every run, e.g. before a session ends
    python benchmarks/paper_runs.py --only fourrooms:ctm:0 --stop-after 3600   # Four Rooms: an hour of it
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TASKS = ("acrobot", "cartpole", "fourrooms")
FULL_BUDGET_TASKS = ("acrobot", "cartpole")  # the default queue; Four Rooms' 300M steps only fit partially
AGENTS = ("ctm", "lstm")
TRAINING_TAGS = {"rollout/ep_len_mean": "ep_len_mean", "rollout/ep_rew_mean": "ep_rew_mean"}


def lstm_width(task: str) -> tuple[int, int, int]:
    """``(lstm_hidden_size, lstm_params, ctm_params)`` for the paper config of ``task``."""
    from agents.sizing import count_parameters, matching_width
    from ctm_rl.config import load_config

    ctm = load_config(REPO / "configs" / "paper" / f"{task}.yaml")
    target = count_parameters(ctm)
    lstm = load_config(REPO / "configs" / "paper" / f"{task}.yaml", ["agent=lstm"])
    width, count = matching_width(lstm, target)
    return width, count, target


def training_curve(tb_dir: Path, out: Path) -> float:
    """Write the training episode statistics of the TensorBoard logs under ``tb_dir`` to ``out``; the
    training wall-clock in seconds (summed over the event files, see the module docstring)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows: dict[int, dict[str, float]] = {}
    wall = 0.0
    # One file per start or resume, in start order (the name holds its start time), read one at a time: a
    # resumed run appends a file to the same folder, and the span of a merged folder would count the pause.
    for events in sorted(tb_dir.rglob("events.out.tfevents.*"), key=lambda path: path.name):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        times = [event.wall_time for tag in accumulator.Tags()["scalars"] for event in accumulator.Scalars(tag)]
        wall += max(times, default=0.0) - min(times, default=0.0)
        for tag, name in TRAINING_TAGS.items():
            if tag in accumulator.Tags()["scalars"]:
                for event in accumulator.Scalars(tag):
                    rows.setdefault(event.step, {})[name] = event.value
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timesteps", *TRAINING_TAGS.values()])
        for step in sorted(rows):
            writer.writerow([step, *(rows[step].get(name, "") for name in TRAINING_TAGS.values())])
    return wall


def copy_results(run_dir: Path, results: Path, stem: str) -> None:
    """Copy the run's evaluations, training curve and wall-clock to ``results`` as ``<stem>_*``."""
    results.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir / "evaluations.csv", results / f"{stem}_evaluations.csv")
    wall = training_curve(run_dir / "tb", results / f"{stem}_training.csv")
    (results / f"{stem}_wall.json").write_text(json.dumps({"wall_s": round(wall)}) + "\n", encoding="utf-8")


def train_run(command: list[str], stop_after: float | None) -> int:
    """Run ``command``; after ``stop_after`` seconds stop it with SIGTERM, on which ``ctm-rl train`` saves a
    resumable checkpoint and exits.  The exit status, 0 for a run stopped on time."""
    process = subprocess.Popen(command, cwd=REPO)
    try:
        return process.wait(timeout=stop_after)
    except subprocess.TimeoutExpired:
        print(f"paper_runs: --stop-after {stop_after:g} s reached, stopping the run", flush=True)
        process.send_signal(signal.SIGTERM)
        code = process.wait()
        # 143: stopped by our SIGTERM after saving its checkpoint; -15: killed by it before training began
        return 0 if code in (0, 128 + signal.SIGTERM, -signal.SIGTERM) else code
    except BaseException:  # interrupted ourselves: let the run save its checkpoint too
        process.send_signal(signal.SIGTERM)
        process.wait()
        raise


def run_one(task: str, agent: str, seed: int, out: Path, results: Path, train: bool = True,
            stop_after: float | None = None) -> int:
    run_dir = out / task / agent / f"seed_{seed}"
    stem = f"{task}_{agent}_seed{seed}"
    if not train:  # --copy-only: what the run has so far, finished or not
        if (run_dir / "evaluations.csv").is_file():
            copy_results(run_dir, results, stem)
            print(f"paper_runs: copied {run_dir}", flush=True)
        return 0
    if (run_dir / "final_model.zip").is_file():
        print(f"paper_runs: {run_dir} finished already", flush=True)
    else:
        if any((run_dir / "checkpoints").glob("model_*_steps.zip")):
            command = ["ctm-rl", "train", "--resume", str(run_dir)]
        else:  # new, or stopped before its first checkpoint: start (again)
            command = ["ctm-rl", "train", str(REPO / "configs" / "paper" / f"{task}.yaml"),
                       "--seed", str(seed), "--run-dir", str(run_dir), "--overwrite"]
            if agent == "lstm":
                width, count, target = lstm_width(task)
                print(f"paper_runs: {task} lstm_hidden_size {width}: {count} parameters, CTM {target}",
                      flush=True)
                command += ["--set", "agent=lstm", "--set", f"policy_kwargs.lstm_hidden_size={width}"]
        print("paper_runs: " + " ".join(command), flush=True)
        code = train_run(command, stop_after)
        if code != 0 or not (run_dir / "final_model.zip").is_file():
            print(f"paper_runs: {run_dir} stopped (exit {code})", flush=True)
            if code == 0 and (run_dir / "evaluations.csv").is_file():  # cut short by --stop-after, as asked
                copy_results(run_dir, results, stem)
                return 0
            return code or 1
    copy_results(run_dir, results, stem)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "paper", help="run directories")
    parser.add_argument("--results", type=Path, default=REPO / "docs" / "results" / "paper",
                        help="where finished runs' CSVs are copied")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per task and agent (0..N-1)")
    parser.add_argument("--only", action="append", default=[], metavar="TASK:AGENT:SEED",
                        help="run only these (repeatable)")
    parser.add_argument("--copy-only", action="store_true",
                        help="train nothing: copy every queued run's results so far, finished or not (for a run "
                             "cut short; paper_report.py labels it with the step it reached)")
    parser.add_argument("--stop-after", type=float, metavar="SECONDS",
                        help="stop each run after this many seconds of training in this call (resumable, and "
                             "its results so far copied): for Four Rooms, whose 300M steps only fit partially")
    args = parser.parse_args()
    if args.stop_after is not None and args.stop_after <= 0:
        parser.error("--stop-after must be positive")
    queue = [(task, agent, seed) for seed in range(args.seeds) for task in FULL_BUDGET_TASKS for agent in AGENTS]
    if args.only:
        try:
            queue = [(task, agent, int(seed)) for task, agent, seed in (item.split(":") for item in args.only)]
        except ValueError:
            parser.error("--only takes TASK:AGENT:SEED, e.g. cartpole:ctm:0")
        unknown = [item for item in queue if item[0] not in TASKS or item[1] not in AGENTS]
        if unknown:
            parser.error(f"unknown task or agent in --only: {unknown[0]}")
    failures = 0
    for task, agent, seed in queue:
        failures += run_one(task, agent, seed, args.out, args.results, train=not args.copy_only,
                            stop_after=args.stop_after) != 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
