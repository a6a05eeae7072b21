"""Load a trained agent and an env to run it on: from a run directory, a model file or an authors' checkpoint.

This is what ``ctm-rl eval`` and ``ctm-rl visualize`` share: the model, and a one-env ``VecEnv`` built as
in training (same wrappers, ``VecNormalize`` statistics frozen, rewards unscaled).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from agents.environment import make_env, make_official_vec_env, probe_spaces
from agents.models import check_device, load_model
from agents.registry import get_agent
from ctm_rl.config import ExperimentConfig, load_config
from ctm_rl.errors import ConfigError, ModelFileError, RunDirError
from ctm_rl.official import CheckpointError
from ctm_rl.ppo import CTMPPO
from ctm_rl.runs import RunDir, vecnormalize_path

OFFICIAL_SUFFIXES = (".pt", ".pth")


@dataclass
class LoadedAgent:
    """A model ready to act, its env, and where they came from."""

    model: BaseAlgorithm
    env: VecEnv
    env_id: str
    source: Path
    run: RunDir | None = None
    config: ExperimentConfig | None = None


def load_agent(target: str | Path, *, env_id: str | None = None, seed: int | None = None,
               render_mode: str | None = None, device: str = "auto") -> LoadedAgent:
    """The agent saved at ``target`` with its env.

    :param target: a run directory (its final model, else best, else latest checkpoint), a model ``.zip``
        inside a run directory, or an authors' ``.pt`` checkpoint.
    :param env_id: run on this env id instead of the one trained on (same wrappers).
    :param seed: seed of the env.
    :param render_mode: e.g. ``rgb_array`` to film or visualise.
    :param device: torch device.
    """
    target = Path(target)
    if target.suffix in OFFICIAL_SUFFIXES:
        return _load_official(target, env_id, seed, render_mode, device)
    if target.is_dir():
        run = RunDir.open(target)
        model_path = run.model_to_play()
    elif target.is_file():
        if target.suffix != ".zip":
            raise ModelFileError(f"{target}: expected a run directory, a model .zip or an authors' .pt "
                                 "checkpoint")
        run = RunDir.of_model(target)
        if run is None:
            raise ModelFileError(f"cannot tell which agent and env {target} belongs to: it is not in a run "
                                 "directory (no config.yaml beside it or one level up)")
        model_path = target
    else:
        raise RunDirError(f"no such run directory or model file: {target}")
    config = load_config(run.config)
    agent = get_agent(config.agent)
    given = probe_spaces(config.env, agent, env_id)
    if env_id is not None:
        _check_same_spaces(probe_spaces(config.env, agent), given, config.env.id, env_id)
    env = make_env(config, agent, n_envs=1, seed=seed, training=False, render_mode=render_mode, env_id=env_id,
                   normalize_stats=vecnormalize_path(model_path))
    model = load_model(agent, model_path, env=env, device=device)
    return LoadedAgent(model, env, env_id or config.env.id, model_path, run, config)


def _layout(space: spaces.Space) -> object:
    """What of a space a trained policy depends on: its kind and shape (Box bounds may differ, e.g. a masked
    env against the unmasked one), recursively for Dict spaces."""
    if isinstance(space, spaces.Dict):
        return {key: _layout(part) for key, part in space.spaces.items()}
    if isinstance(space, spaces.Discrete):
        return ("Discrete", int(space.n))
    return (type(space).__name__, space.shape, space.dtype)


def _check_same_spaces(trained: tuple[spaces.Space, spaces.Space], given: tuple[spaces.Space, spaces.Space],
                       trained_id: str, given_id: str) -> None:
    """Fail with one line naming both spaces if an agent trained on ``trained_id`` cannot act in ``given_id``."""
    for kind, trained_space, given_space in zip(("observation", "action"), trained, given):
        if _layout(trained_space) != _layout(given_space):
            raise ConfigError(f"--env {given_id} has the {kind} space {given_space}, but the agent was trained "
                              f"on {trained_id}, whose {kind} space is {trained_space}")


def _load_official(path: Path, env_id: str | None, seed: int | None, render_mode: str | None,
                   device: str) -> LoadedAgent:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    check_device(device)
    model = CTMPPO.from_official_checkpoint(path, device=device)
    args = dict(model.official_args, **({"env_id": env_id} if env_id else {}))
    env = make_official_vec_env(args, seed, render_mode)
    if env.observation_space.shape != model.observation_space.shape:
        raise ModelFileError(f"{path} was trained on observations of shape {model.observation_space.shape}; "
                             f"{args['env_id']} gives {env.observation_space.shape}")
    return LoadedAgent(model, env, args["env_id"], path)
