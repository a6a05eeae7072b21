"""Training throughput at the paper's masked-CartPole setting: CTMPPO (full BPTT with the fused backward
pass or with plain autograd, chunked, compiled) and sb3-contrib's RecurrentPPO (LSTM), measured the same way
in one run.

Setting (the authors' masked-CartPole script): d_model 128, d_input 128, memory_length 20,
memory_hidden_dims 4, n_synch_out 16, 2 ticks, 256 envs x 100 steps, 4 epochs, 4 minibatches.

    python benchmarks/throughput.py                  # everything, 2 iterations each
    python benchmarks/throughput.py --agents ctm-full --iterations 3 --profile

Reports env steps/s for the rollout alone, the update alone and end to end (rollout + update), and the
rollout buffer's memory.  Never run by CI.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.env_util import make_vec_env

import envs  # noqa: F401  (registers CTM/CartPoleNoVel-v1)
from ctm_rl import CTMPPO

N_ENVS, N_STEPS, N_EPOCHS, N_MINIBATCHES = 256, 100, 4, 4
CTM_KWARGS = dict(d_model=128, d_input=128, memory_length=20, memory_hidden_dims=4, n_synch_out=16, iterations=2)
AGENTS = ("ctm-full", "ctm-autograd", "ctm-chunk10", "ctm-compiled", "lstm")


def build(agent: str, device: str):
    env = make_vec_env("CTM/CartPoleNoVel-v1", n_envs=N_ENVS, seed=0)
    common = dict(n_steps=N_STEPS, batch_size=N_ENVS * N_STEPS // N_MINIBATCHES, n_epochs=N_EPOCHS, seed=0,
                  device=device, learning_rate=1e-3)
    if agent == "lstm":
        return RecurrentPPO("MlpLstmPolicy", env, **common)
    bptt = 10 if agent == "ctm-chunk10" else None
    policy_kwargs = dict(CTM_KWARGS, fused_backward=agent != "ctm-autograd")
    model = CTMPPO("CTMPolicy", env, bptt_steps=bptt, policy_kwargs=policy_kwargs, **common)
    if agent == "ctm-compiled":
        # The tick of the rollout's single env steps (training sequences run the fused pass).
        model.policy.ctm._tick = torch.compile(model.policy.ctm._tick, dynamic=False)
    return model


def buffer_bytes(model) -> int:
    buffer = model.rollout_buffer
    arrays = [v for v in vars(buffer).values() if isinstance(v, np.ndarray)]
    arrays += [h for v in vars(buffer).values() if isinstance(v, tuple) for h in v if isinstance(h, np.ndarray)]
    return sum(a.nbytes for a in arrays)


def measure(agent: str, iterations: int, device: str) -> dict[str, float]:
    model = build(agent, device)
    _, callback = model._setup_learn(10**9, None)
    steps_per_iteration = N_ENVS * N_STEPS
    rollout_time = update_time = 0.0
    for i in range(iterations + 1):  # the first iteration warms up (allocations, compilation)
        start = time.perf_counter()
        model.collect_rollouts(model.env, callback, model.rollout_buffer, N_STEPS)
        middle = time.perf_counter()
        model._update_current_progress_remaining(model.num_timesteps, 10**9)
        model.train()
        end = time.perf_counter()
        if i > 0:
            rollout_time += middle - start
            update_time += end - middle
    steps = steps_per_iteration * iterations
    return {
        "rollout": steps / rollout_time,
        "update": steps / update_time,
        "total": steps / (rollout_time + update_time),
        "buffer_mib": buffer_bytes(model) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default=",".join(AGENTS), help=f"comma-separated, from {AGENTS}")
    parser.add_argument("--iterations", type=int, default=2, help="measured rollout+update iterations")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", action="store_true", help="print a torch profiler table for one update")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, "
          f"{N_ENVS} envs x {N_STEPS} steps, {N_EPOCHS} epochs, {N_MINIBATCHES} minibatches")
    print(f"{'agent':<14}{'rollout/s':>12}{'update/s':>12}{'total/s':>12}{'buffer MiB':>12}")
    for agent in args.agents.split(","):
        if args.profile:
            profile(agent, args.device)
            continue
        result = measure(agent, args.iterations, args.device)
        print(f"{agent:<14}{result['rollout']:>12.0f}{result['update']:>12.0f}{result['total']:>12.0f}"
              f"{result['buffer_mib']:>12.1f}", flush=True)


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
