"""The ``ctm-rl benchmark`` sub-command: its arguments and what it does."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ctm_rl.bench.harness import base_configs, plan, run_all
from ctm_rl.bench.report import default_threshold, write_report
from ctm_rl.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Counts are read as plain ints and checked in `run`: a bad value is then one `ctm-rl: error:` line
    # like every other bad input, not argparse's usage block.
    parser.add_argument("--agents", default="ctm,lstm,mlp,framestack", metavar="A[,A...]",
                        help="agents to compare (default: ctm,lstm,mlp,framestack)")
    parser.add_argument("--envs", required=True, metavar="ID[,ID...]", help="env ids to train on")
    parser.add_argument("--seeds", type=int, default=5, metavar="N", help="seeds 0..N-1 per agent and env "
                        "(default 5)")
    parser.add_argument("--total-timesteps", type=int, metavar="N",
                        help="env steps per run (default: the base config's)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (resumable)")
    parser.add_argument("--workers", type=int, default=2, metavar="W",
                        help="parallel training processes, one torch thread each (default 2)")
    parser.add_argument("--ray-address", metavar="auto|HOST:PORT",
                        help="run the training runs as tasks of this existing Ray cluster instead of local "
                             "processes (pip install 'ctm-rl[ray]'); results land in --out as usual")
    parser.add_argument("--config", dest="configs", action="append", default=[], metavar="[AGENT=]CONFIG",
                        help="base experiment config, of every agent or of one (e.g. lstm=configs/x.yaml for "
                             "each agent's tuned config; repeatable); agent, env id, seed and length are set "
                             "per run (default: built-in, the hyper-parameters of configs/cartpole_masked.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a base-config value, e.g. --set eval.freq=5000 (repeatable)")
    parser.add_argument("--match-params", metavar="AGENT",
                        help="on each env, give the other agents' networks the width that makes their "
                             "parameter count closest to AGENT's (e.g. ctm); the counts are in the report")
    parser.add_argument("--threshold", dest="thresholds", action="append", default=[], metavar="[ID=]VALUE",
                        help="return for 'steps to threshold', for all envs or one env id (repeatable; "
                             "default: the env's registered reward_threshold, if any)")


def _names(text: str, what: str) -> list[str]:
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not names:
        raise UserError(f"--{what} needs at least one name, got {text!r}")
    return names


def _at_least_one(value: int | None, flag: str) -> None:
    if value is not None and value < 1:
        raise UserError(f"{flag} must be a positive integer, got {value}")


def parse_thresholds(texts: list[str], env_ids: list[str]) -> dict[str, float | None]:
    """Per env: the ``--threshold`` for it (``ID=VALUE`` beats a bare ``VALUE``), else its default."""
    common: float | None = None
    specific: dict[str, float] = {}
    for text in texts:
        env_id, sep, value_text = text.rpartition("=")
        try:
            value = float(value_text)
        except ValueError:
            raise UserError(f"--threshold {text!r} is not VALUE or ID=VALUE with a number") from None
        if not sep:
            common = value
        elif env_id not in env_ids:
            raise UserError(f"--threshold {text!r}: {env_id!r} is not one of --envs ({', '.join(env_ids)})")
        else:
            specific[env_id] = value
    return {env_id: specific.get(env_id, common if common is not None else default_threshold(env_id))
            for env_id in env_ids}


def run(args: argparse.Namespace) -> int:
    agents = _names(args.agents, "agents")
    env_ids = _names(args.envs, "envs")
    for value, flag in ((args.seeds, "--seeds"), (args.workers, "--workers"),
                        (args.total_timesteps, "--total-timesteps")):
        _at_least_one(value, flag)
    thresholds = parse_thresholds(args.thresholds, env_ids)
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} exists and is not a directory")
    bases = base_configs(args.configs, [*agents, *([args.match_params] if args.match_params else [])])
    tasks = plan(agents, env_ids, range(args.seeds), args.out, bases, args.overrides,
                 args.total_timesteps, args.match_params)
    args.out.mkdir(parents=True, exist_ok=True)
    results = run_all(tasks, args.workers, ray_address=args.ray_address)
    for path in write_report(results, args.out, thresholds):
        print(path)
    failed = [result for result in results if result.status in ("failed", "stopped")]
    if failed:
        listing = ", ".join(f"{r.task.label} ({r.task.log_path})" for r in failed)
        print(f"ctm-rl: error: {len(failed)} of {len(results)} runs did not finish: {listing}",
              file=sys.stderr)
        return 1
    return 0
