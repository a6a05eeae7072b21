"""Training throughput at the paper's masked-CartPole setting: CTMPPO (full BPTT with the fused backward
pass or with plain autograd, chunked, compiled) and sb3-contrib's RecurrentPPO (LSTM), measured the same way
in one run.  ``ctm-chunkN`` trains on N-step chunks (``bptt_steps=N``), for any N that divides the rollout.

Setting (the authors' masked-CartPole script): d_model 128, d_input 128, memory_length 20,
memory_hidden_dims 4, n_synch_out 16, 2 ticks, 256 envs x 100 steps, 4 epochs, 4 minibatches.

    python benchmarks/throughput.py                  # everything, 2 iterations each
    python benchmarks/throughput.py --agents ctm-full --baseline ../old-checkout
    python benchmarks/throughput.py --agents ctm-full --profile

Reports env steps/s for the rollout alone, the update alone and end to end (rollout + update), and the
rollout buffer's memory.  Every agent runs in a process of its own, and the agents take turns: one
rollout + update iteration each, in reversed order every other round, after one warm-up iteration each.
The speed of a shared VM drifts by tens of percent within minutes; taking turns spreads that drift over
all agents alike, where measuring them one after the other would not.  ``--baseline`` adds another
checkout's ``ctm-full`` (e.g. an older commit, through ``git worktree add``) to the turns, to compare
commits on the same machine at the same time.  Never run by CI.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.env_util import make_vec_env

import envs  # noqa: F401  (registers CTM/CartPoleNoVel-v1)
from ctm_rl import CTMPPO

N_ENVS, N_STEPS, N_EPOCHS, N_MINIBATCHES = 256, 100, 4, 4
CTM_KWARGS = dict(d_model=128, d_input=128, memory_length=20, memory_hidden_dims=4, n_synch_out=16, iterations=2)
AGENTS = ("ctm-full", "ctm-autograd", "ctm-chunk10", "ctm-chunk20", "ctm-compiled", "lstm")
ROOT = Path(__file__).resolve().parent.parent


def build(agent: str, device: str):
    env = make_vec_env("CTM/CartPoleNoVel-v1", n_envs=N_ENVS, seed=0)
    common = dict(n_steps=N_STEPS, batch_size=N_ENVS * N_STEPS // N_MINIBATCHES, n_epochs=N_EPOCHS, seed=0,
                  device=device, learning_rate=1e-3)
    if agent == "lstm":
        return RecurrentPPO("MlpLstmPolicy", env, **common)
    bptt = chunk_steps(agent)
    policy_kwargs = dict(CTM_KWARGS, fused_backward=agent != "ctm-autograd")
    model = CTMPPO("CTMPolicy", env, bptt_steps=bptt, policy_kwargs=policy_kwargs, **common)
    if agent == "ctm-compiled":
        # The tick of the rollout's single env steps (training sequences run the fused pass).
        model.policy.ctm._tick = torch.compile(model.policy.ctm._tick, dynamic=False)
    return model


def chunk_steps(agent: str) -> int | None:
    """N for ``ctm-chunkN``, None for the other agents."""
    return int(agent.removeprefix("ctm-chunk")) if agent.startswith("ctm-chunk") else None


def is_agent(agent: str) -> bool:
    """Whether the benchmark knows ``agent``."""
    if agent.startswith("ctm-chunk"):
        steps = agent.removeprefix("ctm-chunk")
        return steps.isdigit() and int(steps) > 0 and N_STEPS % int(steps) == 0
    return agent in AGENTS


def buffer_bytes(model) -> int:
    buffer = model.rollout_buffer
    arrays = [v for v in vars(buffer).values() if isinstance(v, np.ndarray)]
    arrays += [h for v in vars(buffer).values() if isinstance(v, tuple) for h in v if isinstance(h, np.ndarray)]
    return sum(a.nbytes for a in arrays)


def serve(root: Path, agent: str, device: str, threads: int) -> None:
    """The worker: build ``agent`` with the ``build`` of ``root``'s copy of this script, then time one
    rollout and one update for every line read from stdin, answering with a JSON line each."""
    answers, sys.stdout = sys.stdout, sys.stderr  # stdout carries the answers only
    torch.set_num_threads(threads)
    spec = importlib.util.spec_from_file_location("checkout_throughput", root / "benchmarks" / "throughput.py")
    checkout = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checkout)
    model = checkout.build(agent, device)
    _, callback = model._setup_learn(10**9, None)
    print(json.dumps({"buffer_mib": buffer_bytes(model) / 2**20}), file=answers, flush=True)
    for _ in sys.stdin:
        start = time.perf_counter()
        model.collect_rollouts(model.env, callback, model.rollout_buffer, N_STEPS)
        middle = time.perf_counter()
        model._update_current_progress_remaining(model.num_timesteps, 10**9)
        model.train()
        print(json.dumps({"rollout": middle - start, "update": time.perf_counter() - middle}), file=answers,
              flush=True)


class Worker:
    """One agent in a process of its own (``serve``), from this checkout or another one."""

    def __init__(self, label: str, root: Path, agent: str, device: str, threads: int):
        self.label, self.rollout_s, self.update_s = label, 0.0, 0.0
        # The checkout's own packages come first on the path, before the installed ones.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(root), os.environ.get("PYTHONPATH")))))
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(root), agent, device, str(threads)],
            cwd=root, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.buffer_mib = self._answer()["buffer_mib"]

    def _answer(self) -> dict[str, float]:
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"throughput.py: the worker for {self.label} stopped (its error is above)")
        return json.loads(line)

    def iterate(self, measured: bool) -> None:
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        times = self._answer()
        if measured:
            self.rollout_s += times["rollout"]
            self.update_s += times["update"]

    def close(self) -> None:
        try:
            self.process.stdin.close()
        except BrokenPipeError:  # the worker has stopped already
            pass
        self.process.wait()


def commit_of(root: Path) -> str:
    """The short commit of a checkout, or its folder's name outside git."""
    result = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False)
    return result.stdout.strip() or root.name


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        root, agent, device, threads = sys.argv[2:6]
        serve(Path(root), agent, device, int(threads))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default=",".join(AGENTS),
                        help=f"comma-separated, from {', '.join(AGENTS)} (or ctm-chunkN)")
    parser.add_argument("--iterations", type=int, default=2, help="measured rollout+update iterations per agent")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--baseline", type=Path, help="another checkout of this project whose ctm-full takes turns too")
    parser.add_argument("--profile", action="store_true", help="print torch profiler tables for one rollout and update")
    args = parser.parse_args()
    agents = args.agents.split(",")
    unknown = [agent for agent in agents if not is_agent(agent)]
    if unknown:
        parser.error(f"unknown agent {unknown[0]!r}: choose from {', '.join(AGENTS)} (or ctm-chunkN, N dividing {N_STEPS})")
    if args.iterations < 1:
        parser.error("--iterations must be at least 1")
    if args.baseline is not None and not (args.baseline / "benchmarks" / "throughput.py").is_file():
        parser.error(f"--baseline {args.baseline}: no benchmarks/throughput.py there (a checkout of this project?)")
    torch.set_num_threads(args.threads)
    if args.profile:
        for agent in agents:
            profile(agent, args.device)
        return

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, "
          f"{N_ENVS} envs x {N_STEPS} steps, {N_EPOCHS} epochs, {N_MINIBATCHES} minibatches")
    runs = [(agent, ROOT, agent) for agent in agents]
    if args.baseline is not None:
        runs.append((f"ctm-full@{commit_of(args.baseline)}", args.baseline.resolve(), "ctm-full"))
    workers = []
    try:
        for label, root, agent in runs:
            workers.append(Worker(label, root, agent, args.device, args.threads))
        for round_ in range(args.iterations + 1):  # round 0 warms up (allocations, compilation)
            for worker in workers if round_ % 2 else workers[::-1]:
                worker.iterate(measured=round_ > 0)
    finally:
        for worker in workers:
            worker.close()
    steps = N_ENVS * N_STEPS * args.iterations
    width = max(14, *(len(worker.label) + 2 for worker in workers))
    print(f"{'agent':<{width}}{'rollout/s':>12}{'update/s':>12}{'total/s':>12}{'buffer MiB':>12}")
    for worker in workers:
        print(f"{worker.label:<{width}}{steps / worker.rollout_s:>12.0f}{steps / worker.update_s:>12.0f}"
              f"{steps / (worker.rollout_s + worker.update_s):>12.0f}{worker.buffer_mib:>12.1f}")


def profile(agent: str, device: str) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    model = build(agent, device)
    _, callback = model._setup_learn(10**9, None)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, N_STEPS)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        model.collect_rollouts(model.env, callback, model.rollout_buffer, N_STEPS)
    print(f"--- {agent}: rollout ---")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        model.train()
    print(f"--- {agent}: update ---")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))


if __name__ == "__main__":
    gym.logger.min_level = 40
    main()
