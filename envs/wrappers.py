"""Observation wrappers used to build the partially observable variants in :mod:`envs`."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class MaskObservationWrapper(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Replace chosen components of a 1-D ``Box`` observation by a constant (0 by default).

    This is how the velocity-free classic-control tasks are made, following the CTM paper's
    reference code: the velocity components are zeroed rather than removed, so the observation
    keeps its shape and position in the vector, and the agent has to infer velocities from the
    history of positions, which is what makes these tasks need memory.

    The observation space keeps its shape and dtype; the bounds of the masked components are
    widened (never narrowed) just enough to contain ``fill_value``, so every emitted
    observation stays inside the space without creating degenerate ``low == high`` ranges that
    bound-based normalisers would divide by.

    Args:
        env: environment with a 1-D ``gymnasium.spaces.Box`` observation space.
        indices: positions to mask, each in ``[0, n)`` where ``n`` is the observation length;
            no duplicates, at least one.
        fill_value: the value written into the masked positions.

    Raises:
        TypeError: if the observation space is not a 1-D ``Box`` or an index is not an integer.
        ValueError: if ``indices`` is empty, has duplicates or an index is out of range.
    """

    def __init__(self, env: gym.Env, indices: Sequence[int], fill_value: float = 0.0) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, indices=tuple(indices), fill_value=fill_value)
        gym.ObservationWrapper.__init__(self, env)
        space = env.observation_space
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise TypeError(f"MaskObservationWrapper needs a 1-D Box observation space, got {space!r}")
        size = space.shape[0]
        indices = tuple(indices)
        if not indices:
            raise ValueError("indices must name at least one component to mask")
        for i in indices:
            # bool is an int subclass but True/False as positions is almost surely a mistake
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
                raise TypeError(f"indices must be integers, got {i!r} in {indices!r}")
            if not 0 <= i < size:
                raise ValueError(
                    f"index {i} is out of range for an observation of length {size} "
                    f"(valid: 0..{size - 1}; negative indices are not accepted)"
                )
        if len(set(indices)) != len(indices):
            raise ValueError(f"indices contain duplicates: {indices!r}")

        self.indices = np.array(sorted(int(i) for i in indices), dtype=np.intp)
        self.fill_value = space.dtype.type(fill_value)
        low, high = space.low.copy(), space.high.copy()
        low[self.indices] = np.minimum(low[self.indices], self.fill_value)
        high[self.indices] = np.maximum(high[self.indices], self.fill_value)
        self.observation_space = spaces.Box(low=low, high=high, shape=space.shape, dtype=space.dtype)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        """A copy of ``observation`` with the masked components set to ``fill_value``."""
        masked = np.array(observation, dtype=self.observation_space.dtype, copy=True)
        masked[self.indices] = self.fill_value
        return masked
