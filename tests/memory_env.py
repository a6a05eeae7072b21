"""Tiny test environments for the recurrent learner."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class CueRecallEnv(gym.Env):
    """Recall a cue shown only at the first step.

    Step 0 shows ``[cue, 1]`` with ``cue`` in {-1, +1}; later steps show ``[0, 0]``.  Only the action at the
    last step counts: reward 1 if it names the cue (action 1 for +1, action 0 for -1), else 0.  A policy
    without memory sees the same observation at the last step whatever the cue, so it scores 0.5 on average.
    """

    def __init__(self, length: int = 3):
        self.length = length
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Discrete(2)
        self._t = 0
        self._cue = 1

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        self._cue = int(self.np_random.integers(2))
        return np.array([2 * self._cue - 1, 1], dtype=np.float32), {}

    def step(self, action):
        self._t += 1
        done = self._t >= self.length
        reward = float(done and int(action) == self._cue)
        return np.zeros(2, dtype=np.float32), reward, done, False, {}


class CountingEnv(gym.Env):
    """Observation ``[t / 10, noise]``, reward 1 every step, never terminates: for time-limit tests."""

    def __init__(self):
        self.observation_space = spaces.Box(-1.0, 2.0, (2,), np.float32)
        self.action_space = spaces.Discrete(2)
        self._t = 0

    def _obs(self):
        return np.array([self._t / 10, self.np_random.uniform(-1, 1)], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        self._t += 1
        return self._obs(), 1.0, False, False, {}
