"""Train an agent from an experiment config into a run directory, or resume a run where it stopped.

Everything that can be wrong with the input (config, env, agent options, run directory) is checked
before the run directory is touched, so a failed start never costs an earlier run's files.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

from agents import build_model, get_agent, init_source, load_model, load_weights, make_env, probe_spaces
from ctm_rl.callbacks import PeriodicCheckpoint, PeriodicEvaluation, ProgressBar, StopOnRequest
from ctm_rl.config import ExperimentConfig, dump_config, load_config
from ctm_rl.errors import RunDirError
from ctm_rl.runs import RunDir, atomic_write_text, save_model, vecnormalize_path
from ctm_rl.signals import StopRequest, stop_on_signals

# Evaluation episodes run on envs seeded apart from the training envs (seed + rank).
EVAL_SEED_OFFSET = 10_000


@dataclass
class TrainingOutcome:
    """How a training call ended."""

    run: RunDir
    timesteps: int
    interrupted_by: int | None = None  # the signal number, if a signal stopped training

    @property
    def exit_code(self) -> int:
        return 0 if self.interrupted_by is None else 128 + self.interrupted_by


def _write_config(run: RunDir, config: ExperimentConfig) -> None:
    atomic_write_text(run.config, dump_config(config))


def start_training(config: ExperimentConfig, run_dir: Path, overwrite: bool = False,
                   progress: bool | None = None, log: Callable[[str], None] = print,
                   callback_after_eval: BaseCallback | None = None) -> TrainingOutcome:
    """Train ``config`` from scratch into ``run_dir``.

    :param overwrite: replace an existing run directory (otherwise it is an error).
    :param progress: show the progress bar (``None``: only on a terminal).
    :param log: where messages go.
    :param callback_after_eval: called after each periodic evaluation (see
        :class:`~ctm_rl.callbacks.PeriodicEvaluation`); returning False ends training early, with a final
        model like a full run's.
    """
    agent = get_agent(config.agent)
    probe_spaces(config.env, agent)
    source = init_source(config)
    # A warm start keeps the normalisation statistics its weights were trained with, where it has them
    # (make_env uses them only if this config normalises).
    stats = vecnormalize_path(source) if source is not None else None
    env = make_env(config, agent, n_envs=config.env.n_envs, seed=config.seed, training=True,
                   normalize_stats=stats if stats is not None and stats.is_file() else None)
    run = RunDir(Path(run_dir))
    model, ignored = build_model(config, env, tensorboard_log=str(run.tensorboard))
    if ignored:
        log(f"note: {', '.join(ignored)}: not options of agent {agent.name!r}, ignored")
    if source is not None:
        load_weights(model, source)
    run = RunDir.create(run_dir, overwrite=overwrite)  # only now: every input has been checked
    _write_config(run, config)
    log(f"run directory: {run.root}")
    if source is not None:
        log(f"starting from the weights of {source}")
    return _learn(model, config, run, progress, log, callback_after_eval)


def resume_training(run_dir: Path, total_timesteps: int | None = None, device: str | None = None,
                    progress: bool | None = None, log: Callable[[str], None] = print,
                    callback_after_eval: BaseCallback | None = None) -> TrainingOutcome:
    """Continue the run in ``run_dir`` from its latest checkpoint, with the same step count, optimizer
    state and VecNormalize statistics.

    :param total_timesteps: a new training length (e.g. to extend a finished run).
    :param device: another torch device than the config's.
    :param callback_after_eval: as for :func:`start_training`.
    """
    run = RunDir.open(run_dir)
    config = load_config(run.config)
    if total_timesteps is not None:
        config = replace(config, total_timesteps=total_timesteps)
    if device is not None:
        config = replace(config, device=device)
    latest = run.latest_checkpoint()
    if latest is None:
        raise RunDirError(f"{run.root} has no checkpoint to resume from")
    timesteps, checkpoint = latest
    if timesteps >= config.total_timesteps:
        raise RunDirError(f"{run.root} already has {timesteps} of its {config.total_timesteps} steps: "
                          "pass --total-timesteps to train it further")
    agent = get_agent(config.agent)
    env = make_env(config, agent, n_envs=config.env.n_envs, seed=config.seed, training=True,
                   normalize_stats=vecnormalize_path(checkpoint))
    model = load_model(agent, checkpoint, env=env, device=config.device, tensorboard_log=str(run.tensorboard))
    _write_config(run, config)
    log(f"resuming {run.root} at step {model.num_timesteps} from {checkpoint.name}")
    if dropped := run.drop_evaluations_after(model.num_timesteps):
        log(f"note: {dropped} evaluations after step {model.num_timesteps} dropped: they are made again")
    return _learn(model, config, run, progress, log, callback_after_eval)


def _callbacks(config: ExperimentConfig, run: RunDir, progress: bool | None, stop: StopRequest,
               log: Callable[[str], None], callback_after_eval: BaseCallback | None) -> list[BaseCallback]:
    callbacks: list[BaseCallback] = [ProgressBar(config.total_timesteps, disable=None if progress is None
                                                 else not progress), StopOnRequest(stop)]
    if config.checkpoint_freq:
        callbacks.append(PeriodicCheckpoint(run, config.checkpoint_freq))
    if config.eval.freq:
        agent = get_agent(config.agent)
        eval_seed = None if config.seed is None else config.seed + EVAL_SEED_OFFSET
        eval_env = make_env(config, agent, n_envs=1, seed=eval_seed, training=False)
        callbacks.append(PeriodicEvaluation(run, eval_env, config.eval.freq, config.eval.n_episodes,
                                            config.eval.deterministic, eval_seed, stop, log,
                                            callback_after_eval))
    return callbacks


def _learn(model: BaseAlgorithm, config: ExperimentConfig, run: RunDir, progress: bool | None,
           log: Callable[[str], None], callback_after_eval: BaseCallback | None = None) -> TrainingOutcome:
    """Train until ``config.total_timesteps`` or a stop signal; save the final model or a checkpoint."""
    start_steps, start_time = model.num_timesteps, time.perf_counter()
    with stop_on_signals() as stop:
        # reset_num_timesteps=False: the step count, schedules and TensorBoard curve continue on resume.
        model.learn(total_timesteps=config.total_timesteps - model.num_timesteps,
                    callback=CallbackList(_callbacks(config, run, progress, stop, log, callback_after_eval)),
                    tb_log_name=config.agent, reset_num_timesteps=False)
        elapsed = time.perf_counter() - start_time
        rate = (model.num_timesteps - start_steps) / max(elapsed, 1e-9)
        checkpoint = run.checkpoint(model.num_timesteps)
        save_model(model, checkpoint)
        if stop.requested:
            log(f"stopped at step {model.num_timesteps}; resumable checkpoint {checkpoint}\n"
                f"continue with: ctm-rl train --resume {run.root}")
            return TrainingOutcome(run, model.num_timesteps, stop.signum)
        save_model(model, run.final_model)
    log(f"trained {model.num_timesteps} steps ({rate:.0f} steps/s); final model {run.final_model}")
    return TrainingOutcome(run, model.num_timesteps)
