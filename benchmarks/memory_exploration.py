"""How often a uniformly random policy reaches an arm of the T-maze (docs/MEMORY.md, issue 19).

An agent learns nothing from an episode that ends at the time limit (reward 0, like the wrong arm), so the
share of random episodes that reach either arm bounds how much reward a fresh agent ever sees. Each length
gets ``--episodes`` episodes of uniformly random actions (all 7 MiniGrid actions, as the agents have),
seeded, on the registered env (its own time limit, ``10 (L + 2)`` steps).

    python benchmarks/memory_exploration.py --lengths 4 8 16 32 --episodes 2000
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers the CTM/ ids)


def reach_rates(length: int, episodes: int, seed: int) -> tuple[float, float]:
    """(share of episodes that reach an arm, share that reach the rewarded one) under random actions."""
    env = gym.make(f"CTM/Memory-L{length}-v0")
    rng = np.random.default_rng(seed)
    reached = rewarded = 0
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        while True:
            _, reward, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
            if terminated:  # only entering an arm ends an episode before its time limit
                reached += 1
                rewarded += reward > 0
            if terminated or truncated:
                break
    env.close()
    return reached / episodes, rewarded / episodes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--episodes", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print("| L | time limit | episodes | reach an arm | reach the cued arm |")
    print("|---|---|---|---|---|")
    for length in args.lengths:
        reached, rewarded = reach_rates(length, args.episodes, args.seed)
        print(f"| {length} | {10 * (length + 2)} | {args.episodes} | {100 * reached:.2f}% | {100 * rewarded:.2f}% |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
