"""Build an agent's model from a config, and load saved models with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from agents.options import resolve_options
from agents.registry import AgentSpec, get_agent
from ctm_rl.config import ExperimentConfig
from ctm_rl.errors import ConfigError, ModelFileError


def check_device(device: str) -> None:
    """Fail with a config error for a device torch does not know (``auto`` is SB3's choice)."""
    if device == "auto":
        return
    try:
        torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:0, mps, ...") from None


def build_model(config: ExperimentConfig, env: VecEnv, tensorboard_log: str | None = None
                ) -> tuple[BaseAlgorithm, list[str]]:
    """A new model of ``config.agent`` on ``env``, and the config options that do not apply to that agent."""
    agent = get_agent(config.agent)
    check_device(config.device)
    options = resolve_options(agent, config, agent.policy_for(env.observation_space))
    try:
        model = agent.algo(
            agent.policy_for(env.observation_space),
            env,
            policy_kwargs=options.policy_kwargs,
            tensorboard_log=tensorboard_log,
            seed=config.seed,
            device=config.device,
            verbose=0,
            **options.algo_kwargs,
        )
    # The constructors report bad option values (batch_size < 2, unknown neuron_select_type, ...) this way.
    except (ValueError, TypeError, AssertionError) as error:
        raise ConfigError(f"cannot build agent {agent.name!r} from this config: {error}") from None
    return model, options.ignored


def load_model(agent: AgentSpec, path: Path, env: VecEnv | None = None, device: str = "auto",
               **kwargs: Any) -> BaseAlgorithm:
    """Load a model ``agent`` saved to ``path``, on ``env`` if given (its spaces must match the model's)."""
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    check_device(device)
    try:
        model = agent.algo.load(path, env=env, device=device, **kwargs)
    # A corrupt or foreign file fails in many ways (zip, pickle, missing keys, wrong policy class).
    except Exception as error:  # noqa: BLE001
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFileError(f"cannot load {path} as a {agent.name!r} model ({agent.algo.__name__}): "
                             f"{message}") from None
    if type(model.policy) not in agent.algo.policy_aliases.values():
        raise ModelFileError(f"{path} holds a {type(model.policy).__name__}, "
                             f"not a policy of agent {agent.name!r}")
    return model
