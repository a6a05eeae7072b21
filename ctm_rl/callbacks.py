"""Training callbacks of a run: progress bar, periodic evaluation and checkpoints, stop on a signal.

Frequencies are in env steps (summed over the parallel envs), unlike SB3's callbacks which count calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, EventCallback
from stable_baselines3.common.vec_env import VecEnv, sync_envs_normalization
from tqdm.auto import tqdm

from ctm_rl.evaluation import EvalResult, EvaluationStopped, evaluate
from ctm_rl.runs import RunDir, save_model
from ctm_rl.signals import StopRequest


def _next_multiple(value: int, step: int) -> int:
    return (value // step + 1) * step


class ProgressBar(BaseCallback):
    """Steps done, steps per second and the mean return of the last 100 training episodes.

    :param total: the step count at which training ends (a resumed run starts the bar where it stopped).
    :param disable: ``None`` shows the bar only on a terminal.
    """

    def __init__(self, total: int, disable: bool | None = None):
        super().__init__()
        self.total = total
        self.disable = disable
        self.bar: tqdm | None = None

    def _on_training_start(self) -> None:
        self.bar = tqdm(total=self.total, initial=self.num_timesteps, unit="step", unit_scale=True,
                        dynamic_ncols=True, disable=self.disable, desc="training")

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        return True

    def _on_rollout_end(self) -> None:
        episodes = self.model.ep_info_buffer
        if episodes:
            self.bar.set_postfix_str(f"return {np.mean([e['r'] for e in episodes]):.1f}")

    def _on_training_end(self) -> None:
        self.bar.close()


class StopOnRequest(BaseCallback):
    """Ends training at the next env step once ``request`` is set (by SIGINT/SIGTERM)."""

    def __init__(self, request: StopRequest):
        super().__init__()
        self.request = request

    def _on_step(self) -> bool:
        return not self.request.requested


class PeriodicCheckpoint(BaseCallback):
    """Saves a resumable checkpoint (model, optimizer, VecNormalize statistics) every ``freq`` env steps."""

    def __init__(self, run: RunDir, freq: int):
        super().__init__()
        self.run = run
        self.freq = freq
        self.next_save = 0

    def _on_training_start(self) -> None:
        self.next_save = _next_multiple(self.num_timesteps, self.freq)

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_save:
            save_model(self.model, self.run.checkpoint(self.num_timesteps))
            self.next_save = _next_multiple(self.num_timesteps, self.freq)
        return True


class PeriodicEvaluation(EventCallback):
    """Evaluates on ``eval_env`` every ``freq`` env steps: CSV row, TensorBoard scalars, best model.

    :param eval_env: a one-env VecEnv like the training env (its VecNormalize statistics, if any, are
        copied from the training env before each evaluation and not updated by it).
    :param stop: abandons an evaluation in progress when set, so that training stops promptly.
    :param log: where to print a line per evaluation.
    :param callback_after_eval: called after each evaluation, which it reads as ``parent.last_result``;
        training stops if it returns False (SB3's ``EvalCallback`` convention; ``ctm-rl tune`` prunes so).
    """

    def __init__(self, run: RunDir, eval_env: VecEnv, freq: int, n_episodes: int, deterministic: bool,
                 seed: int | None, stop: StopRequest, log: Callable[[str], None],
                 callback_after_eval: BaseCallback | None = None):
        super().__init__(callback_after_eval)
        self.run = run
        self.stop = stop
        self.eval_env = eval_env
        self.freq = freq
        self.n_episodes = n_episodes
        self.deterministic = deterministic
        self.seed = seed
        self.log = log
        self.next_eval = 0
        self.best = -np.inf
        self.last_result: EvalResult | None = None

    def _on_training_start(self) -> None:
        super()._on_training_start()
        self.next_eval = _next_multiple(self.num_timesteps, self.freq)
        self.best = self.run.best_evaluation()

    def _on_step(self) -> bool:
        if self.num_timesteps < self.next_eval:
            return True
        self.next_eval = _next_multiple(self.num_timesteps, self.freq)
        sync_envs_normalization(self.training_env, self.eval_env)
        start = time.perf_counter()
        try:
            result = evaluate(self.model, self.eval_env, self.n_episodes, self.deterministic, self.seed,
                              should_stop=lambda: self.stop.requested)
        except EvaluationStopped:
            return True  # StopOnRequest ends training at this very step
        self.run.append_evaluation({
            "timesteps": self.num_timesteps,
            "mean_return": result.mean_return,
            "std_return": result.std_return,
            "mean_length": result.mean_length,
            "episodes": len(result.returns),
            "success_rate": "" if result.success_rate is None else result.success_rate,
            "time_s": round(time.perf_counter() - start, 3),
        })
        self.logger.record("eval/mean_reward", result.mean_return)
        self.logger.record("eval/mean_ep_length", result.mean_length)
        if result.success_rate is not None:
            self.logger.record("eval/success_rate", result.success_rate)
        improved = result.mean_return > self.best
        if improved:
            self.best = result.mean_return
            save_model(self.model, self.run.best_model)
        self.log(f"eval @ {self.num_timesteps} steps: {result.summary()}{' (new best)' if improved else ''}")
        self.last_result = result
        return self._on_event()
