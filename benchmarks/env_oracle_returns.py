"""Reference returns of the navigation environments: the shortest-path oracle and a random policy.

    python benchmarks/env_oracle_returns.py                 # 200 seeded episodes per env
    python benchmarks/env_oracle_returns.py --episodes 50 --no-random

For every navigation id, runs seeds ``0 .. episodes-1`` with the oracle (``optimal_action()``)
and, unless ``--no-random``, with uniformly random actions, and prints a Markdown table: the
oracle's mean return (the best achievable mean return on those seeds), its mean shortest
solution length, the step limit, and the random policy's mean return and success rate (how
hard the task is to stumble on). Used for docs/ENVS.md. Never run by CI.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

import envs
from envs.navigation import NavigationEnv, play_episode


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--no-random", action="store_true", help="skip the random-policy columns")
    args = parser.parse_args()

    print("| id | oracle mean return | oracle mean steps | max_steps | random mean return | random success |")
    print("|---|---:|---:|---:|---:|---:|")
    for env_id, _ in envs.list_envs():
        env = gym.make(env_id)
        if not isinstance(env.unwrapped, NavigationEnv):
            continue
        oracle = [play_episode(env, seed, None) for seed in range(args.episodes)]
        assert all(success for *_, success in oracle), f"oracle failed on {env_id}"
        returns, lengths = zip(*((r, n) for r, n, _ in oracle))
        row = f"| {env_id} | {np.mean(returns):.3f} | {np.mean(lengths):.1f} | {env.unwrapped.max_steps} |"
        if args.no_random:
            row += " - | - |"
        else:
            rng = np.random.default_rng(0)
            rand = [play_episode(env, seed, rng) for seed in range(args.episodes)]
            row += f" {np.mean([r for r, _, _ in rand]):.3f} | {np.mean([s for *_, s in rand]):.0%} |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
