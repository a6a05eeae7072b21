"""Build an agent's model from a config, and load saved models with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.vec_env import VecEnv

from agents.options import resolve_options
from agents.registry import AgentSpec, get_agent
from ctm_rl.config import ExperimentConfig
from ctm_rl.errors import ConfigError, ModelFileError
from ctm_rl.runs import RunDir


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


def init_source(config: ExperimentConfig) -> Path | None:
    """The model file ``config.init_from`` names (a run directory's model to play, or a ``.zip``), if any;
    ``{seed}`` and ``{agent}`` in it become the config's seed and agent."""
    if config.init_from is None:
        return None
    target = Path(config.init_from.replace("{seed}", str(config.seed)).replace("{agent}", config.agent))
    if target.is_dir():
        return RunDir.open(target).model_to_play()
    if target.suffix != ".zip" or not target.is_file():
        raise ConfigError(f"init_from: {target} is neither a run directory nor a model .zip")
    return target


def load_weights(model: BaseAlgorithm, path: Path) -> None:
    """Give ``model`` the network weights saved in ``path`` (SB3's zip format); its optimizer stays fresh.

    The networks must be the same: same agent, same sizes, same observation and action spaces.
    """
    try:
        _, params, _ = load_from_zip_file(path, device=model.device, print_system_info=False)
    except Exception as error:  # noqa: BLE001  (a corrupt or foreign file fails in many ways)
        raise ModelFileError(f"cannot read {path} as a model: {str(error).strip() or type(error).__name__}"
                             ) from None
    if not params or "policy" not in params:
        raise ModelFileError(f"{path} holds no policy weights")
    try:
        model.policy.load_state_dict(params["policy"])
    except RuntimeError as error:
        # torch lists every mismatch; its first specific line is enough to see what differs.
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise ConfigError(f"init_from: the network in {path} differs from this config's: {detail[:200]}"
                          ) from None
