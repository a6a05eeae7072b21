"""``ctm-rl``: the command line, one sub-command per user task.

    ctm-rl train CONFIG [--set key=value ...] [--total-timesteps N] [--seed S] [--n-envs N] [--device D]
                        [--run-dir DIR] [--overwrite]
    ctm-rl train --resume RUN_DIR [--total-timesteps N] [--device D]
    ctm-rl eval RUN_DIR_OR_MODEL [--env ID] [--episodes N] [--seed S] [--deterministic|--stochastic]
                                 [--video FILE]
    ctm-rl visualize RUN_DIR_OR_MODEL [--env ID] [--episodes N] [--seed S] [--out DIR] [--format gif|mp4]
                                      [--neurons K]
    ctm-rl envs
    ctm-rl benchmark --envs ID[,ID...] --out DIR [...]          (see ctm_rl.bench.command)
    ctm-rl tune CONFIG --trials N --budget STEPS [...]          (see ctm_rl.tune.command)

``train``, ``eval`` and ``visualize`` also take ``--threads N`` (torch CPU threads, default 1).
Sub-commands live in :data:`COMMANDS`; adding one is adding an entry.  Bad input (see
:mod:`ctm_rl.errors`) ends with one ``ctm-rl: error: ...`` line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from agents import load_agent
from ctm_rl import __version__
from ctm_rl.bench import command as benchmark_command
from ctm_rl.config import load_config
from ctm_rl.errors import UserError
from ctm_rl.evaluation import FrameRecorder, check_video_path, evaluate, write_video
from ctm_rl.official import CheckpointError
from ctm_rl.ppo import CTMPPO
from ctm_rl.runs import RunDir
from ctm_rl.training import TrainingOutcome, resume_training, start_training
from ctm_rl.tune import command as tune_command
from envs import list_envs
from envs.__main__ import format_env_table

PROG = "ctm-rl"
DEFAULT_RUNS_DIR = Path("runs")


@dataclass(frozen=True)
class Command:
    """A sub-command: its name, one line of help, its arguments and what it does (returns the exit code)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _say(message: str) -> None:
    """Print to stdout without breaking a progress bar on the terminal."""
    tqdm.write(message, file=sys.stdout)


def _threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=_positive_int, metavar="N",
                        help="torch CPU threads (default: $OMP_NUM_THREADS if set, else 1)")


def _set_threads(threads: int | None) -> None:
    """One CPU thread unless asked otherwise: a CTM's per-tick ops are too small to share between threads,
    and on a busy machine extra threads wait on each other (10x slower measured with 2 threads on 2 cores
    with other processes running)."""
    if threads is None and "OMP_NUM_THREADS" in os.environ:
        return  # torch has read it already
    torch.set_num_threads(threads or 1)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


# --- train ----------------------------------------------------------------------------------------------


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", type=Path,
                        help="experiment config (YAML), e.g. configs/quickstart.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set algo_kwargs.n_steps=64 (repeatable)")
    parser.add_argument("--total-timesteps", type=_positive_int, metavar="N", help="env steps to train for")
    parser.add_argument("--seed", type=int, metavar="S", help="random seed")
    parser.add_argument("--n-envs", type=_positive_int, metavar="N", help="parallel envs")
    parser.add_argument("--device", metavar="D", help="torch device: auto, cpu, cuda, ...")
    parser.add_argument("--run-dir", type=Path, metavar="DIR",
                        help=f"where the run goes (default: {DEFAULT_RUNS_DIR}/<config>_<agent>_<n>)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue a stopped run from its latest checkpoint (with its own config)")
    _threads_argument(parser)


def _train(args: argparse.Namespace) -> int:
    if args.resume is not None:
        given = {"CONFIG": args.config, "--set": args.overrides, "--seed": args.seed, "--n-envs": args.n_envs,
                 "--run-dir": args.run_dir, "--overwrite": args.overwrite}
        fixed = [flag for flag, value in given.items() if value not in (None, False, [])]
        if fixed:
            raise UserError(f"--resume continues a run with its own config: {', '.join(fixed)} cannot be "
                            "given with it (only --total-timesteps and --device)")
        outcome = resume_training(args.resume, args.total_timesteps, args.device, log=_say)
        return _after_training(outcome)
    if args.config is None:
        raise UserError("train needs a CONFIG file (or --resume RUN_DIR)")
    options = {"total_timesteps": args.total_timesteps, "seed": args.seed, "env.n_envs": args.n_envs,
               "device": args.device}
    overrides = [*args.overrides, *(f"{key}={value}" for key, value in options.items() if value is not None)]
    config = load_config(args.config, overrides)
    run_dir = args.run_dir or _default_run_dir(args.config, config.agent)
    return _after_training(start_training(config, run_dir, overwrite=args.overwrite, log=_say))


def _after_training(outcome: TrainingOutcome) -> int:
    """The exit status of a training run; a finished run also gets the next commands to try on it."""
    if outcome.exit_code == 0:
        run = shlex.quote(str(outcome.run.root))
        lines = [f"  ctm-rl eval {run} --episodes 10    # mean return, length and success over 10 episodes"]
        if load_config(outcome.run.config).agent == "ctm":
            lines.append(f"  ctm-rl visualize {run}    # the CTM's neurons, tick by tick, over an episode")
        lines.append(f"  tensorboard --logdir {shlex.quote(str(outcome.run.tensorboard))}    # the training curves")
        _say("next:\n" + "\n".join(lines))
    return outcome.exit_code


def _default_run_dir(config_path: Path, agent: str) -> Path:
    return RunDir.next_free(DEFAULT_RUNS_DIR, f"{config_path.stem}_{agent}")


# --- eval and visualize ---------------------------------------------------------------------------------


def _target_arguments(parser: argparse.ArgumentParser, episodes: int) -> None:
    """Arguments shared by the commands that run a trained agent."""
    parser.add_argument("target", type=Path, metavar="RUN_DIR_OR_MODEL",
                        help="a run directory, a model .zip inside one, or an authors' .pt checkpoint")
    parser.add_argument("--env", dest="env_id", metavar="ID", help="another env id than the one trained on")
    parser.add_argument("--episodes", type=_positive_int, default=episodes, metavar="N",
                        help=f"episodes to run (default {episodes})")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="env seed (default 0)")
    parser.add_argument("--device", default="auto", metavar="D", help="torch device (default auto)")
    _threads_argument(parser)


def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    _target_arguments(parser, episodes=10)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--deterministic", dest="deterministic", action="store_true", default=None,
                      help="most likely actions (default, unless the run's config says otherwise)")
    mode.add_argument("--stochastic", dest="deterministic", action="store_false", help="sampled actions")
    parser.add_argument("--video", type=Path, metavar="FILE", help="film the first episode (.gif or .mp4)")


def _eval(args: argparse.Namespace) -> int:
    if args.video is not None:
        check_video_path(args.video)
    loaded = load_agent(args.target, env_id=args.env_id, seed=args.seed, device=args.device,
                        render_mode="rgb_array" if args.video else None)
    deterministic = args.deterministic
    if deterministic is None:
        deterministic = loaded.config.eval.deterministic if loaded.config else True
    env = FrameRecorder(loaded.env) if args.video else loaded.env
    result = evaluate(loaded.model, env, args.episodes, deterministic=deterministic, seed=args.seed)
    mode = "deterministic" if deterministic else "stochastic"
    print(f"{loaded.source} on {loaded.env_id}: {len(result.returns)} episodes, {mode}, seed {args.seed}")
    print(f"mean return   {result.mean_return:.2f} ± {result.std_return:.2f}")
    print(f"mean length   {result.mean_length:.1f}")
    if result.success_rate is None:
        print("success rate  n/a (the env reports no is_success)")
    else:
        print(f"success rate  {100 * result.success_rate:.1f}%")
    if args.video is not None:
        print(f"video         {write_video(env.frames, args.video)}")
    return 0


def _visualize_arguments(parser: argparse.ArgumentParser) -> None:
    _target_arguments(parser, episodes=1)
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="output folder (default: RUN_DIR/media, or ./media for a model file)")
    parser.add_argument("--format", dest="fmt", choices=("gif", "mp4"), default="gif",
                        help="animation format (default gif; mp4 needs imageio-ffmpeg)")
    parser.add_argument("--neurons", type=_positive_int, default=16, metavar="K",
                        help="neurons to draw (default 16)")


def _visualize(args: argparse.Namespace) -> int:
    # Imported here: the drawing stack (matplotlib) is only needed by this command.
    from ctm_rl.viz import record_episode, write_episode_media
    from ctm_rl.viz.writers import check_format


    try:
        check_format(args.fmt)
    except RuntimeError as error:
        raise UserError(str(error)) from None
    loaded = load_agent(args.target, env_id=args.env_id, seed=args.seed, device=args.device,
                        render_mode="rgb_array")
    if not isinstance(loaded.model, CTMPPO):
        raise UserError(f"visualize shows a CTM's internal activity; {loaded.source} is a "
                        f"{type(loaded.model).__name__} model (use `ctm-rl eval --video` to film it)")
    out_dir = args.out or (loaded.run.root / "media" if loaded.run else Path("media"))
    for episode in range(args.episodes):
        recording = record_episode(loaded.model, loaded.env, seed=args.seed + episode, deterministic=True)
        stem = f"{loaded.source.stem}_seed{args.seed + episode}"
        for path in write_episode_media(recording, out_dir, stem, fmt=args.fmt, n_neurons=args.neurons):
            print(path)
    return 0


# --- envs -----------------------------------------------------------------------------------------------


def _envs_arguments(parser: argparse.ArgumentParser) -> None:
    """No arguments."""


def _envs(args: argparse.Namespace) -> int:
    print(format_env_table(list_envs()))
    return 0


# --- entry point ----------------------------------------------------------------------------------------

COMMANDS: dict[str, Command] = {
    command.name: command
    for command in (
        Command("train", "train an agent from a config into a run directory (or --resume one)",
                _train_arguments, _train),
        Command("eval", "evaluate a trained agent: mean return, length, success rate",
                _eval_arguments, _eval),
        Command("visualize", "record a CTM agent's episodes with its neural activity", _visualize_arguments,
                _visualize),
        Command("envs", "list the environments of the suite", _envs_arguments, _envs),
        Command("benchmark", "train agents x envs x seeds in parallel and compare them (IQM, CIs, curves)",
                benchmark_command.add_arguments, benchmark_command.run),
        Command("tune", "search hyper-parameters with Optuna (TPE, median pruning); resumable; writes best.yaml",
                tune_command.add_arguments, tune_command.run),
    )
}


def build_parser() -> argparse.ArgumentParser:
    """The ``ctm-rl`` argument parser with every command of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog=PROG, description="Continuous Thought Machines as recurrent "
                                     "Stable-Baselines3 policies: train, evaluate, visualise.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS.values():
        sub = commands.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ctm-rl`` with ``argv`` (default: the process's arguments); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed usage and the error (or the help)
        return int(exit_.code or 0)
    if "threads" in args:
        _set_threads(args.threads)
    try:
        return args.run(args)
    except (UserError, CheckpointError) as error:
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
