"""Custom environments for evaluating recurrent agents, registered under ``CTM/...``.

Importing this package registers every id with gymnasium, so both ``import envs`` followed by
``gym.make("CTM/Maze-11x11-v0")`` and ``gym.make("envs:CTM/Maze-11x11-v0")`` work (gymnasium
imports the module named before the colon). ``python -m envs`` lists the ids.

Families:

* ``CTM/Maze-*``: a new procedurally generated maze per episode (egocentric or full view);
* ``CTM/Memory-L*``: T-maze whose cue is visible at step 0 only, corridor length ``L``;
* ``CTM/KeyDoorMaze-*`` and ``CTM/ReturnToStart-*``: maze navigation with ordered sub-goals;
* ``CTM/*NoVel-v1``: CartPole, Acrobot and Pendulum with velocity components zeroed.

The navigation environments also provide ``env.unwrapped.optimal_action()``,
``info["optimal_steps"]`` at reset and ``info["is_success"]`` in every step's info (so in the last one).

Entry points are strings, so importing the package does not import MiniGrid or build anything;
this package imports nothing from ``ctm_rl`` (the dependency points the other way).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

__all__ = ["NAMESPACE", "list_envs"]

NAMESPACE = "CTM"


@dataclass(frozen=True)
class _EnvEntry:
    """One registered id with its one-line description."""

    id: str
    entry_point: str
    description: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    max_episode_steps: int | None = None
    reward_threshold: float | None = None


def _entries() -> list[_EnvEntry]:
    """The catalogue, in the order ``list_envs`` and ``python -m envs`` show it."""
    entries: list[_EnvEntry] = []
    for size in (7, 11, 15, 21):
        entries.append(
            _EnvEntry(
                f"{NAMESPACE}/Maze-{size}x{size}-v0",
                "envs.maze:MazeEnv",
                f"exploration + memory: new {size}x{size} perfect maze each episode, reach the goal; "
                "egocentric 7x7 view",
                {"size": size},
            )
        )
    for size in (7, 11, 15, 21):
        entries.append(
            _EnvEntry(
                f"{NAMESPACE}/Maze-{size}x{size}-Full-v0",
                "envs.maze:MazeEnv",
                f"planning, no memory needed: new {size}x{size} maze each episode, whole maze observed "
                f"({size}x{size}x3 grid)",
                {"size": size, "fully_observed": True},
            )
        )
    for length in (4, 8, 16, 32):
        entries.append(
            _EnvEntry(
                f"{NAMESPACE}/Memory-L{length}-v0",
                "envs.memory:MemoryEnv",
                f"memory horizon {length}: cue (key or ball) visible at step 0 only, {length}-cell corridor, "
                "enter the T-maze arm whose object matches it",
                {"length": length},
            )
        )
    for size in (9, 15):
        entries.append(
            _EnvEntry(
                f"{NAMESPACE}/KeyDoorMaze-{size}x{size}-v0",
                "envs.subgoal:KeyDoorMazeEnv",
                f"ordered sub-goals: in a new {size}x{size} maze pick up the key, unlock the door, "
                "reach the goal; egocentric 7x7 view",
                {"size": size},
            )
        )
    for size in (9, 15):
        entries.append(
            _EnvEntry(
                f"{NAMESPACE}/ReturnToStart-{size}x{size}-v0",
                "envs.subgoal:ReturnToStartEnv",
                f"path integration: in a new {size}x{size} maze step on the purple tile, then return to "
                "the unmarked start; egocentric 7x7 view",
                {"size": size},
            )
        )
    classic = "envs.classic:make_without_velocities"
    entries += [
        _EnvEntry(
            f"{NAMESPACE}/CartPoleNoVel-v1",
            classic,
            "CartPole-v1 with cart and pole velocities zeroed (obs[1], obs[3]); 500-step limit",
            {"base_entry_point": "gymnasium.envs.classic_control.cartpole:CartPoleEnv"},
            max_episode_steps=500,
            reward_threshold=475.0,
        ),
        _EnvEntry(
            f"{NAMESPACE}/AcrobotNoVel-v1",
            classic,
            "Acrobot-v1 with both joint angular velocities zeroed (obs[4], obs[5]); 500-step limit",
            {"base_entry_point": "gymnasium.envs.classic_control.acrobot:AcrobotEnv"},
            max_episode_steps=500,
            reward_threshold=-100.0,
        ),
        _EnvEntry(
            f"{NAMESPACE}/PendulumNoVel-v1",
            classic,
            "Pendulum-v1 with the angular velocity zeroed (obs[2]); continuous torque; 200-step limit",
            {"base_entry_point": "gymnasium.envs.classic_control.pendulum:PendulumEnv"},
            max_episode_steps=200,
        ),
    ]
    return entries


_ENTRIES = _entries()


def _register_all() -> None:
    """Register every id once; re-importing (e.g. via ``importlib.reload``) is a no-op."""
    for entry in _ENTRIES:
        if entry.id in gym.registry:
            continue
        gym.register(
            id=entry.id,
            entry_point=entry.entry_point,
            kwargs=dict(entry.kwargs),
            max_episode_steps=entry.max_episode_steps,
            reward_threshold=entry.reward_threshold,
        )


def list_envs() -> list[tuple[str, str]]:
    """Every registered ``CTM/...`` id with a one-line description of what it tests."""
    return [(entry.id, entry.description) for entry in _ENTRIES]


_register_all()
