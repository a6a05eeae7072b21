"""Environment step rate: CTM mazes against MiniGrid-FourRooms-v0, random actions, one env; or, with
``--vec``, the batched vector env (``env.vec_env: batched``) against ``DummyVecEnv``.

    python benchmarks/env_speed.py                   # 20k steps x 3 repeats per env
    python benchmarks/env_speed.py --steps 5000 --repeats 1
    python benchmarks/env_speed.py --vec             # 64 envs, BatchedGridVecEnv vs DummyVecEnv (~5 min)
    python benchmarks/env_speed.py --vec --n-envs 16 --ids CTM/Memory-L8-v0 CTM/Maze-11x11-v0

Each env is made with ``gym.make`` (so with gymnasium's default wrappers, as training code uses
it), driven by seeded uniformly random actions, and reset whenever an episode ends; resets
(maze generation and the oracle's shortest-path search for ``info["optimal_steps"]``) are
therefore included in the rate. Reported: median steps/s over the repeats. ``CTM/Maze-21x21-v0
(stock MiniGrid obs)`` is the same maze with MiniGrid's own observation code swapped back in,
to separate the cost of the task from that of the observation encoder.

``--vec`` builds both vector envs as training does (``make_vec_env`` with Monitor inside, auto-reset)
and counts env steps (``n_envs`` per vector step), with the same pre-sampled actions for both, which
therefore run the same episodes. Random actions rarely solve a task, so most episodes end at the step
limit, all envs at once: ``--vec-steps`` defaults to the env's step limit (at least 300 vector steps),
so that the window holds each env's share of resets, as a long run does. The two vector envs are timed
in turns, in alternating order, so that drifts in the machine's speed hit both alike; the ratio is
that of the medians.

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
import numpy as np
from minigrid.minigrid_env import MiniGridEnv
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

import envs  # noqa: F401  (registers CTM/...)
from envs.batched import BatchedGridVecEnv
from envs.maze import MazeEnv

# The --vec default: the two ids of the speed target, then one of each other family and size extreme.
VEC_IDS = (
    "CTM/Memory-L8-v0",
    "CTM/Maze-11x11-v0",
    "CTM/Maze-11x11-Full-v0",
    "CTM/Memory-L32-v0",
    "CTM/Maze-21x21-v0",
    "CTM/KeyDoorMaze-9x9-v0",
    "CTM/ReturnToStart-9x9-v0",
)
MIN_VEC_STEPS = 300


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


def vec_steps_per_second(vec_env_cls: type[VecEnv], env_id: str, actions: np.ndarray, seed: int
                         ) -> tuple[float, int]:
    """Env steps per second of ``vec_env_cls`` over ``env_id`` stepped with ``actions`` (vector steps x
    envs), and the number of episodes that ended."""
    venv = make_vec_env(lambda: gym.make(env_id), n_envs=actions.shape[1], seed=seed, vec_env_cls=vec_env_cls)
    venv.reset()
    episodes = 0
    start = time.perf_counter()
    for step_actions in actions:
        episodes += int(venv.step(step_actions)[2].sum())
    elapsed = time.perf_counter() - start
    venv.close()
    return actions.size / elapsed, episodes


def compare_vec_envs(env_ids: list[str], n_envs: int, vec_steps: int | None, repeats: int, seed: int) -> None:
    """Print the ``--vec`` table: DummyVecEnv and BatchedGridVecEnv rates at ``n_envs`` envs."""
    print(f"machine: {machine_description()}")
    window = f"{vec_steps}" if vec_steps else f"the env's step limit (at least {MIN_VEC_STEPS})"
    print(f"{n_envs} envs, random actions, {window} vector steps x {repeats} repeats per vector env, "
          "resets included\n")
    print("| env | vector steps | DummyVecEnv steps/s | BatchedGridVecEnv steps/s | batched / dummy "
          "| episodes per repeat |")
    print("|---|---:|---:|---:|---:|---:|")
    for env_id in env_ids:
        env = gym.make(env_id)
        steps = vec_steps or max(MIN_VEC_STEPS, env.unwrapped.max_steps)
        rates: dict[type[VecEnv], list[float]] = {DummyVecEnv: [], BatchedGridVecEnv: []}
        for repeat in range(repeats):
            # Seeded, and sampled outside the timing.
            actions = np.random.default_rng(seed + repeat).integers(env.action_space.n, size=(steps, n_envs))
            order = [DummyVecEnv, BatchedGridVecEnv] if repeat % 2 == 0 else [BatchedGridVecEnv, DummyVecEnv]
            for vec_env_cls in order:
                rate, episodes = vec_steps_per_second(vec_env_cls, env_id, actions, seed + 1000 * repeat)
                rates[vec_env_cls].append(rate)
        env.close()
        dummy, batched = (statistics.median(rates[cls]) for cls in (DummyVecEnv, BatchedGridVecEnv))
        print(f"| {env_id} | {steps} | {dummy:,.0f} | {batched:,.0f} | {batched / dummy:.1f}x | {episodes} |",
              flush=True)


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
    parser.add_argument("--steps", type=int, default=20_000, help="steps per repeat (single envs)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vec", action="store_true",
                        help="time BatchedGridVecEnv against DummyVecEnv instead of single envs")
    parser.add_argument("--n-envs", type=int, default=64, help="envs per vector env (--vec)")
    parser.add_argument("--vec-steps", type=int, default=None,
                        help="vector steps per repeat (--vec; default: the env's step limit, at least 300)")
    parser.add_argument("--ids", nargs="+", default=list(VEC_IDS), metavar="ID", help="env ids (--vec)")
    args = parser.parse_args()
    if args.vec:
        compare_vec_envs(args.ids, args.n_envs, args.vec_steps, args.repeats, args.seed)
        return

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
