"""Environment step rate: CTM mazes against MiniGrid-FourRooms-v0, random actions, one env.

    python benchmarks/env_speed.py                   # 20k steps x 3 repeats per env
    python benchmarks/env_speed.py --steps 5000 --repeats 1

Each env is made with ``gym.make`` (so with gymnasium's default wrappers, as training code uses
it), driven by seeded uniformly random actions, and reset whenever an episode ends; resets
(maze generation and the oracle's shortest-path search for ``info["optimal_steps"]``) are
therefore included in the rate. Reported: median steps/s over the repeats. ``CTM/Maze-21x21-v0
(stock MiniGrid obs)`` is the same maze with MiniGrid's own observation code swapped back in,
to separate the cost of the task from that of the observation encoder.

Prints a Markdown table plus the machine description. Never run by CI.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import minigrid
from minigrid.minigrid_env import MiniGridEnv

import envs  # noqa: F401  (registers CTM/...)
from envs.maze import MazeEnv


class _StockObservationMaze(MazeEnv):
    """``MazeEnv`` observing through MiniGrid's stock (cell-by-cell) observation code."""

    def gen_obs(self) -> dict[str, Any]:
        obs = MiniGridEnv.gen_obs(self)
        return {"image": obs["image"], "direction": obs["direction"]}


def _env_makers() -> dict[str, Callable[[], gym.Env]]:
    return {
        "MiniGrid-FourRooms-v0": lambda: gym.make("MiniGrid-FourRooms-v0"),
        "CTM/Maze-11x11-v0": lambda: gym.make("CTM/Maze-11x11-v0"),
        "CTM/Maze-21x21-v0": lambda: gym.make("CTM/Maze-21x21-v0"),
        "CTM/Maze-21x21-Full-v0": lambda: gym.make("CTM/Maze-21x21-Full-v0"),
        # Same wrappers gym.make adds, so the comparison is like for like.
        "CTM/Maze-21x21-v0 (stock MiniGrid obs)": lambda: gym.wrappers.OrderEnforcing(
            gym.wrappers.PassiveEnvChecker(_StockObservationMaze(size=21))
        ),
        "CTM/Memory-L16-v0": lambda: gym.make("CTM/Memory-L16-v0"),
        "CTM/KeyDoorMaze-15x15-v0": lambda: gym.make("CTM/KeyDoorMaze-15x15-v0"),
    }


def steps_per_second(make: Callable[[], gym.Env], n_steps: int, seed: int) -> tuple[float, int]:
    """Random-action steps per second over ``n_steps`` steps, and the number of episodes seen."""
    env = make()
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(n_steps)]  # sampled outside the timing
    episode = 0
    env.reset(seed=seed)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            episode += 1
            env.reset(seed=seed + episode)
    elapsed = time.perf_counter() - start
    env.close()
    return n_steps / elapsed, episode


def machine_description() -> str:
    """CPU model, core count, OS, Python and library versions, and the load at the time."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, gymnasium {gym.__version__}, minigrid {minigrid.__version__}; "
        f"load average {load}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=20_000, help="steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rows = []
    for name, make in _env_makers().items():
        rates, episodes = [], 0
        for repeat in range(args.repeats):
            rate, episodes = steps_per_second(make, args.steps, args.seed + 1000 * repeat)
            rates.append(rate)
        rows.append((name, statistics.median(rates), min(rates), max(rates), episodes))

    reference = rows[0][1]
    print(f"machine: {machine_description()}")
    print(f"{args.steps} random-action steps x {args.repeats} repeats per env, single env, resets included\n")
    print("| env | steps/s (median) | min - max | episodes per repeat | vs FourRooms |")
    print("|---|---:|---:|---:|---:|")
    for name, median, low, high, episodes in rows:
        print(
            f"| {name} | {median:,.0f} | {low:,.0f} - {high:,.0f} | {episodes} | {median / reference:.2f}x |"
        )


if __name__ == "__main__":
    main()
