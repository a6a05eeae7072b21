"""Render one picture per environment family into docs/img/envs_*.png (used by docs/ENVS.md).

    python benchmarks/env_pictures.py                # writes docs/img/envs_{maze,memory,subgoal,classic}.png
    python benchmarks/env_pictures.py --out /tmp/img

Every frame comes from the environments' own ``render()`` (``render_mode="rgb_array"``) or
MiniGrid's agent point-of-view render, at fixed seeds, so the pictures are reproducible.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Circle
from minigrid.core.actions import Actions

import envs  # noqa: F401  (registers CTM/...)

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "img"


def _frame(env: gym.Env) -> np.ndarray:
    frame = env.render()
    assert isinstance(frame, np.ndarray)
    return frame


def _pov(env: gym.Env) -> np.ndarray:
    """What the agent's egocentric observation shows, drawn with MiniGrid's tiles."""
    raw = env.unwrapped
    return raw.get_frame(tile_size=raw.tile_size, agent_pov=True)


def _panel_figure(panels: list[tuple[np.ndarray, str]], path: Path, width: float, suptitle: str) -> None:
    ratios = [frame.shape[1] / frame.shape[0] for frame, _ in panels]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(width, width / sum(ratios) + 0.9), gridspec_kw={"width_ratios": ratios}
    )
    for ax, (frame, title) in zip(np.atleast_1d(axes), panels):
        ax.imshow(frame)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def maze_picture(out: Path) -> None:
    panels = []
    for size in (7, 11, 15, 21):
        env = gym.make(f"CTM/Maze-{size}x{size}-v0", render_mode="rgb_array")
        env.reset(seed=2)
        panels.append((_frame(env), f"CTM/Maze-{size}x{size}-v0"))
    panels.append((_pov(env), "agent's 7x7 view (21x21)"))
    _panel_figure(
        panels,
        out / "envs_maze.png",
        15,
        "Maze: new perfect maze per episode; red triangle = agent, green = goal, "
        "light cells = egocentric view (Full variants observe the whole grid)",
    )


def memory_picture(out: Path) -> None:
    env = gym.make("CTM/Memory-L8-v0", render_mode="rgb_array")
    env.reset(seed=0)
    panels = [(_frame(env), "step 0: cue (left of agent) in view"), (_pov(env), "agent's view, step 0")]
    env.step(Actions.forward)
    panels.append((_frame(env), "step 1: cue removed from the grid"))
    for _ in range(7):
        env.step(Actions.forward)
    panels.append((_pov(env), "agent's view at the junction"))
    _panel_figure(
        panels,
        out / "envs_memory.png",
        15,
        "Memory-L8: remember the cue (key or ball) shown only at step 0, enter the arm ending in the same object",
    )


def subgoal_picture(out: Path) -> None:
    keydoor = gym.make("CTM/KeyDoorMaze-15x15-v0", render_mode="rgb_array")
    keydoor.reset(seed=4)
    panels = [(_frame(keydoor), "KeyDoorMaze-15x15: start")]
    raw = keydoor.unwrapped
    while True:  # follow the oracle until the door has just been unlocked
        action = raw.optimal_action()
        keydoor.step(action)
        if action == Actions.toggle:
            break
    panels.append((_frame(keydoor), "key carried, door unlocked"))

    ret = gym.make("CTM/ReturnToStart-15x15-v0", render_mode="rgb_array")
    ret.reset(seed=4)
    start = tuple(ret.unwrapped.agent_pos)
    panels.append((_frame(ret), "ReturnToStart-15x15: purple tile, start circled"))

    ratios = [frame.shape[1] / frame.shape[0] for frame, _ in panels]
    fig, axes = plt.subplots(1, 3, figsize=(14, 14 / sum(ratios) + 0.9), gridspec_kw={"width_ratios": ratios})
    for ax, (frame, title) in zip(axes, panels):
        ax.imshow(frame)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    tile = ret.unwrapped.tile_size
    # The start is not marked in the environment (the agent must remember it); circle it here.
    axes[2].add_patch(
        Circle(((start[0] + 0.5) * tile, (start[1] + 0.5) * tile), 0.7 * tile, fill=False, color="cyan", lw=2)
    )
    fig.suptitle(
        "Sub-goals: key -> locked door -> goal;  landmark -> back to the unmarked start", fontsize=11
    )
    fig.tight_layout()
    path = out / "envs_subgoal.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def classic_picture(out: Path) -> None:
    panels = []
    for env_id in ("CTM/CartPoleNoVel-v1", "CTM/AcrobotNoVel-v1", "CTM/PendulumNoVel-v1"):
        env = gym.make(env_id, render_mode="rgb_array")
        obs, _ = env.reset(seed=0)
        env.action_space.seed(0)
        for _ in range(10):
            obs, *_ = env.step(env.action_space.sample())
        shown = np.array2string(obs, precision=2, suppress_small=True, separator=", ")
        panels.append((_frame(env), f"{env_id}\nobs = {shown}"))
        env.close()
    _panel_figure(
        panels,
        out / "envs_classic.png",
        14,
        "Classic control without velocities: velocity components are always 0, the agent must infer them",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    maze_picture(args.out)
    memory_picture(args.out)
    subgoal_picture(args.out)
    classic_picture(args.out)


if __name__ == "__main__":
    main()
