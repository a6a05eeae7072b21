"""Classic-control tasks without velocities (partially observable: velocity must be inferred)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import load_env_creator

from envs.wrappers import MaskObservationWrapper

# Which observation components are velocities, per base environment (gymnasium's layouts):
#   CartPole  [x, x_dot, theta, theta_dot]
#   Acrobot   [cos t1, sin t1, cos t2, sin t2, dt1, dt2]
#   Pendulum  [cos theta, sin theta, theta_dot]
VELOCITY_INDICES: dict[str, tuple[int, ...]] = {
    "gymnasium.envs.classic_control.cartpole:CartPoleEnv": (1, 3),
    "gymnasium.envs.classic_control.acrobot:AcrobotEnv": (4, 5),
    "gymnasium.envs.classic_control.pendulum:PendulumEnv": (2,),
}


def make_without_velocities(base_entry_point: str, **kwargs: Any) -> gym.Env:
    """Build the base environment and zero its velocity components.

    Used as the registered entry point of the ``CTM/*NoVel`` ids (gymnasium then adds the time
    limit). The base is instantiated directly rather than through ``gym.make`` so that the
    outer ``gym.make`` call owns the only ``TimeLimit`` / ``OrderEnforcing`` wrappers.

    Args:
        base_entry_point: one of the keys of :data:`VELOCITY_INDICES`.
        **kwargs: forwarded to the base environment (e.g. ``render_mode``).
    """
    if base_entry_point not in VELOCITY_INDICES:
        raise ValueError(f"unknown base environment {base_entry_point!r}; known: {sorted(VELOCITY_INDICES)}")
    base = load_env_creator(base_entry_point)(**kwargs)
    return MaskObservationWrapper(base, VELOCITY_INDICES[base_entry_point])
