"""Parameter counts of agents, and the network width that makes one agent as large as another.

A comparison "at equal parameter count" changes one width per agent (``AgentSpec.width_option``: the
CTM's ``d_model``, the LSTM's ``lstm_hidden_size``, the MLPs' two hidden layers) and keeps everything
else from the config.  Counts are of the whole policy (backbone, recurrent core, actor and critic heads).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from gymnasium import spaces

from agents.environment import make_env
from agents.options import resolve_options
from agents.registry import AgentSpec, get_agent
from ctm_rl.config import ExperimentConfig
from ctm_rl.errors import ConfigError

_MAX_WIDTH = 4096


def policy_spaces(config: ExperimentConfig) -> tuple[spaces.Space, spaces.Space]:
    """The observation and action spaces the policy of ``config`` sees (after flattening, stacking, ...)."""
    venv = make_env(config, get_agent(config.agent), n_envs=1, seed=0, training=False)
    try:
        return venv.observation_space, venv.action_space
    finally:
        venv.close()


def count_parameters(config: ExperimentConfig, extra_policy_kwargs: dict[str, Any] | None = None,
                     policy_space_pair: tuple[spaces.Space, spaces.Space] | None = None) -> int:
    """Number of parameters of the policy that ``config`` builds (with ``extra_policy_kwargs`` on top);
    ``policy_space_pair`` saves making an env when :func:`policy_spaces` is known already."""
    spec = get_agent(config.agent)
    observation_space, action_space = policy_space_pair or policy_spaces(config)
    alias = spec.policy_for(observation_space)
    policy_kwargs = {**resolve_options(spec, config, alias).policy_kwargs, **(extra_policy_kwargs or {})}
    try:
        policy = spec.algo.policy_aliases[alias](observation_space, action_space, lambda _: 0.0, **policy_kwargs)
    except (ValueError, TypeError, AssertionError) as error:
        raise ConfigError(f"cannot build agent {spec.name!r} from this config: {error}") from None
    return sum(parameter.numel() for parameter in policy.parameters())


def matching_width(config: ExperimentConfig, target: int) -> tuple[int, int]:
    """``(width, count)``: the width of ``config.agent``'s network whose parameter count is closest to
    ``target``, and that count.  Counts grow with width; widths too small to build count as too small."""
    spec: AgentSpec = get_agent(config.agent)
    space_pair = policy_spaces(config)

    @cache
    def count(width: int) -> int:
        try:
            return count_parameters(config, spec.width_kwargs(width), space_pair)
        except ConfigError:
            return -1  # e.g. a d_model smaller than the synchronisation needs

    # Doubling first: building (and orthogonally initialising) a needlessly wide network is slow.
    high = 8
    while count(high) < target:
        if high >= _MAX_WIDTH:
            raise ConfigError(f"agent {spec.name!r} has fewer than {target} parameters even at "
                              f"{spec.width_option} {high}")
        high *= 2
    low = 1
    while low < high:  # the smallest width with count >= target
        middle = (low + high) // 2
        if count(middle) >= target:
            high = middle
        else:
            low = middle + 1
    candidates = [(abs(count(w) - target), w) for w in (low - 1, low) if w >= 1 and count(w) > 0]
    width = min(candidates)[1]
    return width, count(width)
