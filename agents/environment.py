"""Environments for an agent: from an experiment config, or from an authors' checkpoint's arguments.

Every env is a Monitor-wrapped gymnasium env inside a ``VecEnv``; reward/observation normalisation
(``VecNormalize``) and frame stacking (``VecFrameStack``, for the ``framestack`` agent) wrap the vector
env, in RL-Zoo's order.  MiniGrid ``(object, colour, state)`` index grids are flattened to vectors for
agents that do not embed them (they are categorical indices, not pixels), and Dict observations to one
vector for the ``framestack`` agent.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
from gymnasium import spaces
from gymnasium.wrappers import FlattenObservation
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecFrameStack, VecNormalize

from agents.registry import AgentSpec
from ctm_rl.backbones import has_symbolic_grid, is_symbolic_grid
from ctm_rl.config import EnvConfig, ExperimentConfig, import_object
from ctm_rl.errors import ConfigError, ModelFileError, did_you_mean
from ctm_rl.signals import sigint_ignored

_SIMPLE_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)
_DEFAULT_GAMMA = 0.99  # the PPO algorithms' default, for VecNormalize's return estimate


def register_env_ids() -> None:
    """Make every id the suite knows resolvable: ours (``CTM/...``) and MiniGrid's."""
    import minigrid  # noqa: F401  (registers MiniGrid-...)

    import envs  # noqa: F401  (registers CTM/...)


def check_env_id(env_id: str) -> None:
    """Fail with a suggestion if ``env_id`` is not registered (``module:Id`` ids are imported by gym)."""
    register_env_ids()
    if ":" in env_id or env_id in gym.registry:
        return
    raise ConfigError(f"unknown env id {env_id!r}{did_you_mean(env_id, gym.registry)}; "
                      "`ctm-rl envs` lists the suite's environments")


def _wrapper_list(config: EnvConfig) -> list[tuple[Callable[..., gym.Env], dict[str, Any]]]:
    """The config's wrappers as (class, kwargs), imported now so a typo fails before training starts."""
    resolved = []
    for index, item in enumerate(config.wrappers):
        key = f"env.wrappers[{index}]"
        if isinstance(item, str):
            resolved.append((import_object(item, key), {}))
        elif isinstance(item, dict) and len(item) == 1 and isinstance(next(iter(item.values())) or {}, dict):
            path, kwargs = next(iter(item.items()))
            resolved.append((import_object(path, key), dict(kwargs or {})))
        else:
            raise ConfigError(f"config key {key!r} must be 'module.Class' or {{'module.Class': {{kwargs}}}}, "
                              f"got {item!r}")
    return resolved


def env_factory(config: EnvConfig, agent: AgentSpec, render_mode: str | None = None,
                env_id: str | None = None) -> Callable[[], gym.Env]:
    """A function that makes one env of ``config`` as ``agent`` sees it (``env_id`` replaces the id)."""
    env_id = env_id or config.id
    check_env_id(env_id)
    wrappers = _wrapper_list(config)
    kwargs = dict(config.env_kwargs, **({"render_mode": render_mode} if render_mode else {}))

    def make() -> gym.Env:
        env = gym.make(env_id, max_episode_steps=config.max_episode_steps, **kwargs)
        for wrapper, wrapper_kwargs in wrappers:
            env = wrapper(env, **wrapper_kwargs)
        space = env.observation_space
        flattenable = not isinstance(space, spaces.Dict) or all(
            isinstance(part, _SIMPLE_SPACES) for part in space.spaces.values())  # else check_spaces explains
        if flattenable and ((not agent.embeds_symbolic_grids and has_symbolic_grid(space))
                            or (agent.frame_stack and isinstance(space, spaces.Dict))):
            # One vector (one-hot for Discrete parts such as MiniGrid's direction): index grids are not
            # images for SB3's CNN extractor, and VecFrameStack stacks Box observations only.
            env = FlattenObservation(env)
        return env

    return make


def check_spaces(agent: AgentSpec, observation_space: spaces.Space, action_space: spaces.Space) -> None:
    """Fail with a hint if ``agent`` cannot act in an env with these spaces."""
    if not isinstance(action_space, _SIMPLE_SPACES):
        raise ConfigError(f"agent {agent.name!r} cannot produce actions in {action_space}: "
                          "it needs a Box, Discrete, MultiDiscrete or MultiBinary action space")
    is_dict = isinstance(observation_space, spaces.Dict)
    parts = observation_space.spaces if is_dict else {"": observation_space}
    for key, space in parts.items():
        if not isinstance(space, _SIMPLE_SPACES):
            where = f"the observation key {key!r}" if key else "the observation"
            minigrid = is_dict and "image" in parts
            hint = " (MiniGrid: add minigrid.wrappers.ImgObsWrapper to env.wrappers)" if minigrid else ""
            raise ConfigError(f"agent {agent.name!r} cannot read {where}, "
                              f"a {type(space).__name__} space{hint}")
        if agent.frame_stack and not isinstance(space, spaces.Box):
            raise ConfigError(f"agent {agent.name!r} stacks frames and needs Box observations, got {space}")


def probe_spaces(config: EnvConfig, agent: AgentSpec, env_id: str | None = None
                 ) -> tuple[spaces.Space, spaces.Space]:
    """Make one env to check that it can be made and that ``agent`` handles its spaces."""
    make = env_factory(config, agent, env_id=env_id)
    try:
        env = make()
    except Exception as error:  # noqa: BLE001  (whatever the env or a wrapper raises about its arguments)
        raise ConfigError(f"cannot make env {env_id or config.id!r}: "
                          f"{type(error).__name__}: {error}") from None
    try:
        check_spaces(agent, env.observation_space, env.action_space)
        return env.observation_space, env.action_space
    finally:
        env.close()


def _normalization(venv: VecEnv, config: ExperimentConfig, training: bool, stats: Path | None) -> VecEnv:
    """Wrap ``venv`` in ``VecNormalize`` as the config asks, with saved statistics if ``stats`` is given."""
    env = config.env
    if not env.normalized:
        return venv
    if stats is not None:
        if not stats.is_file():
            raise ModelFileError(f"{stats} is missing: the model was trained with VecNormalize statistics")
        try:
            normalized = VecNormalize.load(str(stats), venv)
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as error:
            raise ModelFileError(f"cannot read VecNormalize statistics {stats}: {error}") from None
    else:
        gamma = config.algo_kwargs.get("gamma", _DEFAULT_GAMMA)
        normalized = VecNormalize(venv, norm_obs=env.normalize_obs, norm_reward=env.normalize_reward,
                                  gamma=gamma)
    normalized.training = training
    # Evaluation reports the env's own returns; only training sees scaled rewards.
    normalized.norm_reward = env.normalize_reward and training
    return normalized


def _batched_vec_env(config: EnvConfig, factory: Callable[[], gym.Env], n_envs: int, seed: int | None,
                     env_id: str) -> VecEnv:
    """``make_vec_env`` with :class:`envs.batched.BatchedGridVecEnv`; what it cannot step is a config error.

    Training, evaluation, videos and ``visualize`` all use it: its trajectories, frames and infos are
    those of ``DummyVecEnv``, so a run's evaluations do not depend on the choice.
    """
    from envs.batched import BatchedGridVecEnv, UnsupportedEnvError

    if config.wrappers:
        raise ConfigError("env.vec_env 'batched' steps the bare CTM/ grid envs and cannot apply env.wrappers; "
                          "remove them or use env.vec_env: dummy")
    try:
        return make_vec_env(factory, n_envs=n_envs, seed=seed, vec_env_cls=BatchedGridVecEnv)
    except UnsupportedEnvError as error:
        raise ConfigError(f"env.vec_env 'batched' cannot step {env_id!r}: {error}; use env.vec_env: dummy") from None


def make_env(config: ExperimentConfig, agent: AgentSpec, *, n_envs: int, seed: int | None, training: bool,
             normalize_stats: Path | None = None, render_mode: str | None = None,
             env_id: str | None = None) -> VecEnv:
    """The vectorised env of ``config`` for ``agent``.

    :param n_envs: number of parallel envs.
    :param seed: seed of the first env (the others get ``seed + i``).
    :param training: update normalisation statistics and scale rewards (False for evaluation).
    :param normalize_stats: saved ``VecNormalize`` statistics to start from (if the config normalises).
    :param render_mode: e.g. ``rgb_array`` for videos.
    :param env_id: another env id than the config's (same wrappers), e.g. to evaluate on a larger maze.
    """
    if config.env.normalize_obs and is_symbolic_grid(probe_spaces(config.env, agent, env_id)[0]):
        raise ConfigError("env.normalize_obs cannot be used with MiniGrid index observations: "
                          "they are categories, not measurements")
    factory = env_factory(config.env, agent, render_mode=render_mode, env_id=env_id)
    if config.env.vec_env == "batched":
        venv = _batched_vec_env(config.env, factory, n_envs, seed, env_id or config.env.id)
    else:
        subproc = config.env.vec_env == "subproc" and n_envs > 1
        # Workers must leave Ctrl-C to the trainer, which then saves a resumable checkpoint.
        with sigint_ignored(subproc):
            venv = make_vec_env(factory, n_envs=n_envs, seed=seed,
                                vec_env_cls=SubprocVecEnv if subproc else DummyVecEnv)
    venv = _normalization(venv, config, training, normalize_stats)
    return VecFrameStack(venv, agent.frame_stack) if agent.frame_stack else venv


def official_env(args: dict[str, Any], render_mode: str | None = None) -> gym.Env:
    """The env an authors' checkpoint was trained on, as its code built it.

    MiniGrid ids are seen through ``ImgObsWrapper`` with ``args['max_environment_steps']`` as MiniGrid's
    step limit; classic-control ids have their velocities zeroed when ``args['mask_velocity']`` (the
    authors' default: True) and ``max_environment_steps`` as their time limit.
    """
    register_env_ids()
    env_id = args.get("env_id")
    if not env_id:
        raise ModelFileError("the checkpoint names no env_id: pass --env")
    check_env_id(env_id)
    max_steps = args.get("max_environment_steps")
    if "MiniGrid" in env_id:
        from minigrid.wrappers import ImgObsWrapper

        extra = {"max_steps": max_steps} if max_steps else {}
        return ImgObsWrapper(gym.make(env_id, render_mode=render_mode, **extra))
    env = gym.make(env_id, render_mode=render_mode, max_episode_steps=max_steps)
    if args.get("mask_velocity", True):
        from envs.classic import VELOCITY_INDICES
        from envs.wrappers import MaskObservationWrapper

        indices = VELOCITY_INDICES.get(str(gym.spec(env_id).entry_point))
        if indices is None:
            raise ModelFileError("the checkpoint masks velocities, but no velocity layout is known for "
                                 f"{env_id!r}")
        env = MaskObservationWrapper(env, indices)
    return env


def make_official_vec_env(args: dict[str, Any], seed: int | None, render_mode: str | None = None) -> VecEnv:
    """A one-env ``VecEnv`` of :func:`official_env` (Monitor-wrapped, for evaluation)."""
    official_env(args).close()  # fail here, with a clear message, rather than inside the VecEnv
    venv = DummyVecEnv([lambda: Monitor(official_env(args, render_mode))])
    venv.seed(seed)
    return venv
