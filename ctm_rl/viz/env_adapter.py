"""One episode's worth of env interaction, the same for a ``gym.Env`` and a single-env ``VecEnv``.

The recorder needs, per step: the observation the policy reads, the observation as the env produced it
(before any ``VecNormalize``), the rendered frame, and the un-normalised reward.  A plain env gives those
directly; a ``VecEnv`` (e.g. ``DummyVecEnv`` + ``VecNormalize`` loaded from a training run) batches
everything, auto-resets at the end, normalises observations and rewards, and renders through
``get_images()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv, unwrap_vec_normalize

if TYPE_CHECKING:  # only for annotations: typing.Self exists from Python 3.11
    from typing import Self

Obs = np.ndarray | dict[str, np.ndarray]


class StepResult(NamedTuple):
    """What one env step returns to the recorder."""

    policy_obs: Obs
    raw_obs: Obs
    reward: float
    terminated: bool
    truncated: bool


class EnvAdapter:
    """Common interface; use as a context manager so temporary changes to the env are undone."""

    env_id: str | None
    unwrapped: Any
    observation_space: gym.Space

    def reset(self, seed: int | None) -> tuple[Obs, Obs]:
        """Start an episode: ``(observation for the policy, observation as the env made it)``."""
        raise NotImplementedError

    def frame(self) -> np.ndarray | None:
        """The rendered frame of the current state (``None`` when the env does not render rgb arrays)."""
        raise NotImplementedError

    def step(self, action: Any) -> StepResult:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class GymEnvAdapter(EnvAdapter):
    """A plain ``gym.Env`` made with ``render_mode="rgb_array"`` (any other mode records no frames)."""

    def __init__(self, env: gym.Env):
        self.env = env
        self.env_id = env.spec.id if env.spec is not None else None
        self.unwrapped = env.unwrapped
        self.observation_space = env.observation_space

    def reset(self, seed: int | None) -> tuple[Obs, Obs]:
        obs, _ = self.env.reset(seed=seed)
        return obs, obs

    def frame(self) -> np.ndarray | None:
        if self.env.render_mode != "rgb_array":
            return None
        return _as_rgb(self.env.render())

    def step(self, action: Any) -> StepResult:
        obs, reward, terminated, truncated, _ = self.env.step(action)
        return StepResult(obs, obs, float(reward), bool(terminated), bool(truncated))


class VecEnvAdapter(EnvAdapter):
    """A ``VecEnv`` with exactly one env.

    A ``VecNormalize`` inside is switched to evaluation mode for the episode (its running statistics and
    reward normalisation must not move while we only watch) and restored afterwards.
    """

    def __init__(self, env: VecEnv):
        if env.num_envs != 1:
            raise ValueError(f"record_episode needs a VecEnv with one env, got {env.num_envs}")
        self.env = env
        self.vec_normalize = unwrap_vec_normalize(env)
        self.env_id = _first_attr(env, "spec")
        self.env_id = getattr(self.env_id, "id", None)
        self.unwrapped = _first_attr(env, "unwrapped")
        self.observation_space = env.observation_space
        self._saved_flags: tuple[bool, bool] | None = None

    def __enter__(self) -> Self:
        if self.vec_normalize is not None:
            self._saved_flags = (self.vec_normalize.training, self.vec_normalize.norm_reward)
            self.vec_normalize.training = False
        return self

    def __exit__(self, *exc: object) -> None:
        if self.vec_normalize is not None and self._saved_flags is not None:
            self.vec_normalize.training, self.vec_normalize.norm_reward = self._saved_flags

    def reset(self, seed: int | None) -> tuple[Obs, Obs]:
        if seed is not None:
            self.env.seed(seed)
        obs = self.env.reset()
        return _first(obs), self._raw_obs(obs)

    def frame(self) -> np.ndarray | None:
        try:
            images = self.env.get_images()
        except (AttributeError, NotImplementedError):
            return None
        return _as_rgb(images[0]) if images else None

    def step(self, action: Any) -> StepResult:
        obs, rewards, dones, infos = self.env.step(np.asarray([action]))
        reward = rewards[0] if self.vec_normalize is None else self.vec_normalize.get_original_reward()[0]
        done = bool(dones[0])
        truncated = done and bool(infos[0].get("TimeLimit.truncated", False))
        # After ``done`` the VecEnv has already reset: the observation is the next episode's first one,
        # which the recorder never uses (it stops at the end of the episode).
        return StepResult(_first(obs), self._raw_obs(obs), float(reward), done and not truncated, truncated)

    def _raw_obs(self, obs: Obs) -> Obs:
        if self.vec_normalize is None:
            return _first(obs)
        return _first(self.vec_normalize.get_original_obs())


def make_adapter(env: gym.Env | VecEnv) -> EnvAdapter:
    """The adapter for a ``gym.Env`` or a single-env ``VecEnv``."""
    if isinstance(env, VecEnv):
        return VecEnvAdapter(env)
    if isinstance(env, gym.Env):
        return GymEnvAdapter(env)
    raise TypeError(f"env must be a gymnasium.Env or a stable-baselines3 VecEnv, got {type(env).__name__}")


def _first(obs: Obs) -> Obs:
    """The first env's observation of a batch."""
    if isinstance(obs, dict):
        return {key: value[0] for key, value in obs.items()}
    return obs[0]


def _first_attr(env: VecEnv, name: str) -> Any:
    """Attribute of the first env (best effort: e.g. a subprocess env may not ship it back)."""
    try:
        return env.get_attr(name, indices=[0])[0]
    except Exception:  # noqa: BLE001 - only used for labels, never required
        return None


def _as_rgb(frame: Any) -> np.ndarray | None:
    """A rendered frame as ``(H, W, 3)`` uint8, or ``None`` for anything that is not an rgb array."""
    if frame is None:
        return None
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] not in (3, 4):
        return None
    if frame.dtype != np.uint8:
        frame = np.clip(frame * (255.0 if frame.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    return frame[..., :3]
