"""Evaluate a trained agent: returns, lengths and success rate over whole episodes, optionally filmed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from ctm_rl.errors import UserError

VIDEO_FPS = 30.0


@dataclass
class EvalResult:
    """Per-episode returns and lengths; successes where the env reports ``info['is_success']``."""

    returns: list[float]
    lengths: list[int]
    successes: list[bool] = field(default_factory=list)

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std_return(self) -> float:
        return float(np.std(self.returns))

    @property
    def mean_length(self) -> float:
        return float(np.mean(self.lengths))

    @property
    def success_rate(self) -> float | None:
        """Fraction of successful episodes; ``None`` if the env never says."""
        return float(np.mean(self.successes)) if self.successes else None

    def summary(self) -> str:
        """One line: ``return 475.2 ± 10.3 | length 475.2 | success 90% | 10 episodes``."""
        success = "n/a" if self.success_rate is None else f"{100 * self.success_rate:.0f}%"
        return (f"return {self.mean_return:.2f} ± {self.std_return:.2f} | length {self.mean_length:.1f} | "
                f"success {success} | {len(self.returns)} episodes")


class EvaluationStopped(Exception):
    """``evaluate`` gave up because ``should_stop`` said so."""


def evaluate(model: BaseAlgorithm, env: VecEnv, n_episodes: int, deterministic: bool = True,
             seed: int | None = None, should_stop: Callable[[], bool] | None = None) -> EvalResult:
    """Run ``n_episodes`` whole episodes of ``model`` on ``env`` (a Monitor-wrapped VecEnv).

    Recurrent agents get their state carried and reset exactly as in training (SB3's ``evaluate_policy``
    passes ``state`` and ``episode_start`` to ``predict``).  ``seed`` seeds the env's next reset.
    ``should_stop`` is asked after every step; when it answers True, :class:`EvaluationStopped` is raised
    (a training run told to stop must not first finish a long evaluation).
    """
    successes: list[bool] = []

    def record_success(local_vars: dict[str, Any], _globals: dict[str, Any]) -> None:
        if should_stop is not None and should_stop():
            raise EvaluationStopped
        if local_vars["done"] and "is_success" in local_vars["info"]:
            successes.append(bool(local_vars["info"]["is_success"]))

    if seed is not None:
        env.seed(seed)
    returns, lengths = evaluate_policy(model, env, n_eval_episodes=n_episodes, deterministic=deterministic,
                                       return_episode_rewards=True, callback=record_success)
    return EvalResult([float(r) for r in returns], [int(n) for n in lengths], successes)


class FrameRecorder(VecEnvWrapper):
    """Keeps the rendered frames of the first episode of the first env (env made with ``rgb_array``).

    One episode only: ten 500-step CartPole episodes at 600x400 would need gigabytes of frames.
    """

    def __init__(self, venv: VecEnv):
        super().__init__(venv)
        self.frames: list[np.ndarray] = []
        self.filming = False

    def _grab(self) -> None:
        frame = self.venv.get_images()[0]
        if frame is not None:
            self.frames.append(np.asarray(frame, dtype=np.uint8))

    def reset(self):
        observations = self.venv.reset()
        self.filming = not self.frames
        if self.filming:
            self._grab()
        return observations

    def step_wait(self) -> VecEnvStepReturn:
        result = self.venv.step_wait()
        if self.filming:
            # At an episode's end the env has already reset: the frame would show the next episode.
            self.filming = not result[2][0]
            if self.filming:
                self._grab()
        return result


def check_video_path(path: Path) -> str:
    """The video format of ``path`` (``gif`` or ``mp4``), checked before any episode is run."""
    from ctm_rl.viz.writers import check_format

    fmt = path.suffix.lstrip(".").lower()
    try:
        check_format(fmt)
    except (ValueError, RuntimeError) as error:
        raise UserError(f"cannot write video {path}: {error}") from None
    return fmt


def write_video(frames: list[np.ndarray], path: Path) -> Path:
    """Write ``frames`` as a GIF or MP4 (by ``path``'s suffix)."""
    from ctm_rl.viz.writers import write_gif, write_mp4

    if not frames:
        raise UserError("the env rendered no frames: it may not support render_mode='rgb_array'")
    path.parent.mkdir(parents=True, exist_ok=True)
    if check_video_path(path) == "gif":
        samples = [frames[0], frames[len(frames) // 2], frames[-1]]
        return write_gif(frames, path, VIDEO_FPS, palette_samples=samples)
    return write_mp4(frames, path, VIDEO_FPS)
