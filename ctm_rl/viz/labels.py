"""Human-readable action names for the action-probability panel."""

from __future__ import annotations

from enum import Enum
from typing import Any

import numpy as np
from gymnasium import spaces

# Discrete action meanings of common environments whose envs do not expose them, by id prefix
# (the part before the version, so "CartPole-v1" and "CTM/CartPoleNoVel-v1" both match).
KNOWN_ACTIONS: dict[str, list[str]] = {
    "CartPole": ["push left", "push right"],
    "Acrobot": ["torque -1", "torque 0", "torque +1"],
    "MountainCar": ["push left", "no push", "push right"],
    "LunarLander": ["noop", "fire left", "fire main", "fire right"],
}


def action_names(unwrapped: Any, env_id: str | None, action_space: spaces.Space) -> list[str]:
    """Names of the actions (or action components), one per bar of the action panel.

    Looks, in order, for MiniGrid's ``actions`` enum, an Atari-style ``get_action_meanings()``, a known env
    id, and falls back to ``"action i"``.  Non-discrete spaces get one name per component.

    :param unwrapped: the innermost env (``env.unwrapped``), or ``None`` when it cannot be reached.
    :param env_id: the registered id, if any.
    :param action_space: the policy's action space.
    """
    if isinstance(action_space, spaces.Discrete):
        n = int(action_space.n)
        names = _names_from_env(unwrapped) or _names_from_id(env_id)
        if names is not None and len(names) >= n:
            return list(names[:n])
        return [f"action {i}" for i in range(n)]
    if isinstance(action_space, spaces.MultiDiscrete):
        return [f"dim {d}: {v}" for d, n in enumerate(action_space.nvec.ravel()) for v in range(int(n))]
    if isinstance(action_space, spaces.MultiBinary):
        return [f"bit {i}" for i in range(int(np.prod(action_space.shape)))]
    return [f"dim {i}" for i in range(int(action_space.shape[0]) if action_space.shape else 1)]


def _names_from_env(unwrapped: Any) -> list[str] | None:
    if unwrapped is None:
        return None
    actions = getattr(unwrapped, "actions", None)  # MiniGrid: an IntEnum (left, right, forward, ...)
    if isinstance(actions, type) and issubclass(actions, Enum):
        return [a.name for a in actions]
    meanings = getattr(unwrapped, "get_action_meanings", None)  # Atari (ALE)
    if callable(meanings):
        try:
            return [str(m).lower() for m in meanings()]
        except Exception:  # noqa: BLE001 - a best-effort label, never a reason to fail a recording
            return None
    return None


def _names_from_id(env_id: str | None) -> list[str] | None:
    if not env_id:
        return None
    name = env_id.split("/")[-1]
    for prefix, names in KNOWN_ACTIONS.items():
        if name.startswith(prefix):
            return names
    return None
