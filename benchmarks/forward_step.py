"""Time one environment step of CTMPolicy's forward pass at the reference's masked-CartPole size.

One step is what a rollout does per env step: backbone, K internal ticks, output synchronisation, actor
and critic heads, action sampling -- ``CTMPolicy.forward`` under ``torch.inference_mode``.  The default
setting is the paper's masked-CartPole agent (d_model 128, d_input 128, memory 20, NLM hidden 4,
n_synch_out 16, 2 ticks, 256 envs, observations of 4 numbers, 2 actions).

    python benchmarks/forward_step.py --threads 2
    python benchmarks/forward_step.py --device cuda --batch 1024

Prints the median time of one step and the env steps per second it implies (batch / median), the spread
(min, p10, p90: a wide spread means other processes competed for the cores), and the component medians
(backbone, CTM core, heads) to show where the time goes.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from gymnasium import spaces

from ctm_rl.ctm import CTMState
from ctm_rl.policy import CTMPolicy

# The reference's masked-CartPole agent (its published training script).
CARTPOLE_CTM = {"d_model": 128, "d_input": 128, "memory_length": 20, "memory_hidden_dims": 4,
                "n_synch_out": 16, "iterations": 2, "deep_nlms": True, "synapse_depth": 1}
OBS_DIM, N_ACTIONS = 4, 2


def time_ms(step: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Wall times of ``repeats`` calls of ``step`` in milliseconds (CUDA synchronised around each call)."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):  # allocator, oneDNN/cuBLAS kernel selection, lazy initialisation
        step()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(1e3 * (time.perf_counter() - start))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--batch", type=int, default=256, help="parallel envs per step (default 256)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)

    policy = CTMPolicy(spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32), spaces.Discrete(N_ACTIONS),
                       lambda _: 1e-3, **CARTPOLE_CTM).to(device)
    policy.set_training_mode(False)
    obs = torch.randn(args.batch, OBS_DIM, device=device)
    no_starts = torch.zeros(args.batch, device=device)
    # Start from a realistic mid-episode state (a few steps in), and carry it as a rollout would.
    holder: dict[str, CTMState] = {}
    with torch.inference_mode():
        state = policy.ctm.initial_state(args.batch)
        for _ in range(5):
            _, _, _, state = policy(obs, state, no_starts)
        holder["state"] = state
        feature_term = policy._feature_term(obs)
        sync, _ = policy.ctm(feature_term, state, no_starts)

    def full_step() -> None:
        with torch.inference_mode():
            _, _, _, holder["state"] = policy(obs, holder["state"], no_starts)

    def backbone() -> None:
        with torch.inference_mode():
            policy._feature_term(obs)

    def core() -> None:
        with torch.inference_mode():
            policy.ctm(feature_term, state, no_starts)

    def heads() -> None:
        with torch.inference_mode():
            distribution, _ = policy._heads(sync)
            distribution.log_prob(distribution.get_actions())

    times = time_ms(full_step, device, args.warmup, args.repeats)
    ms = statistics.median(times)
    parts = {name: statistics.median(time_ms(fn, device, args.warmup, args.repeats))
             for name, fn in (("backbone", backbone), ("ctm core", core), ("heads+sampling", heads))}

    print(f"CTMPolicy forward step, masked-CartPole size {CARTPOLE_CTM}, batch {args.batch}")
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{platform.processor() or platform.machine()}")
    print(f"median over {args.repeats} repeats (after {args.warmup} warm-up): {ms:.3f} ms per step, "
          f"{args.batch / (ms / 1e3):,.0f} env-steps/s")
    # A wide spread means other processes competed for the cores: the minimum is the uncontended cost.
    low, high = np.percentile(times, [10, 90])
    print(f"spread: min {min(times):.3f} ms, p10 {low:.3f} ms, p90 {high:.3f} ms, "
          f"load average {os.getloadavg()[0]:.2f}")
    print("components: " + ", ".join(f"{name} {value:.3f} ms" for name, value in parts.items()))


if __name__ == "__main__":
    main()
