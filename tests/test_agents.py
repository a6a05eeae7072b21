"""The agent registry: options per agent, envs per agent, tiny training runs, saving and loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from stable_baselines3 import PPO
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecFrameStack, VecNormalize

from agents import (
    AGENTS,
    build_model,
    check_spaces,
    get_agent,
    load_model,
    make_env,
    official_env,
    probe_spaces,
    resolve_options,
)
from ctm_rl.config import ExperimentConfig, build_dataclass
from ctm_rl.errors import ConfigError, ModelFileError
from ctm_rl.ppo import CTMPPO
from ctm_rl.runs import save_model, vecnormalize_path

TINY_CTM = {"d_model": 8, "d_input": 8, "memory_length": 3, "memory_hidden_dims": 2, "n_synch_out": 4,
            "iterations": 1}


def tiny_config(agent: str = "ctm", env_id: str = "CTM/CartPoleNoVel-v1", **env: object) -> ExperimentConfig:
    return build_dataclass(ExperimentConfig, {
        "agent": agent,
        "env": {"id": env_id, "n_envs": 2, **env},
        "policy_kwargs": {**TINY_CTM, "lstm_hidden_size": 8, "net_arch": [16]},
        "algo_kwargs": {"n_steps": 16, "batch_size": 16, "n_epochs": 1},
        "total_timesteps": 64,
        "seed": 0,
        "device": "cpu",
    })


def test_registry():
    assert list(AGENTS) == ["ctm", "lstm", "mlp", "framestack"]
    assert (AGENTS["ctm"].algo, AGENTS["lstm"].algo, AGENTS["mlp"].algo) == (CTMPPO, RecurrentPPO, PPO)
    assert AGENTS["ctm"].recurrent and AGENTS["lstm"].recurrent and not AGENTS["framestack"].recurrent
    assert AGENTS["ctm"].policy_for(spaces.Dict({"a": spaces.Discrete(2)})) == "MultiInputCTMPolicy"
    with pytest.raises(ConfigError, match=r"unknown agent 'lsmt' \(did you mean 'lstm'\?\)"):
        get_agent("lsmt")


def test_options_of_other_agents_are_left_out_and_reported():
    options = resolve_options(get_agent("lstm"), tiny_config("lstm"), "MlpLstmPolicy")
    assert options.policy_kwargs == {"lstm_hidden_size": 8, "net_arch": [16]}
    assert sorted(options.ignored) == sorted(f"policy_kwargs.{name}" for name in TINY_CTM)
    config = build_dataclass(ExperimentConfig, {"env": {"id": "CartPole-v1"},
                                                "algo_kwargs": {"bptt_steps": 4}})
    assert resolve_options(get_agent("mlp"), config, "MlpPolicy").ignored == ["algo_kwargs.bptt_steps"]


def test_options_are_converted():
    config = build_dataclass(ExperimentConfig, {
        "env": {"id": "CartPole-v1"},
        "algo_kwargs": {"learning_rate": "lin_1e-3", "clip_range": "lin_0.2", "gamma": 1, "batch_size": None},
        "policy_kwargs": {"activation_fn": "tanh", "optimizer_class": "torch.optim.AdamW"},
    })
    options = resolve_options(get_agent("ctm"), config, "CTMPolicy")
    schedule = options.algo_kwargs["learning_rate"]
    assert isinstance(schedule, LinearSchedule) and schedule(1.0) == pytest.approx(1e-3)
    assert schedule(0.5) == pytest.approx(5e-4) and schedule(0.0) == 0.0
    assert options.algo_kwargs["gamma"] == 1.0 and isinstance(options.algo_kwargs["gamma"], float)
    assert options.policy_kwargs == {"activation_fn": torch.nn.Tanh, "optimizer_class": torch.optim.AdamW}


@pytest.mark.parametrize("section, name, value, message", [
    ("algo_kwargs", "n_stpes", 8, r"unknown option 'algo_kwargs.n_stpes' .*'algo_kwargs.n_steps'"),
    ("policy_kwargs", "d_modle", 8, r"did you mean 'policy_kwargs.d_model'"),
    ("algo_kwargs", "n_steps", "many", r"'algo_kwargs.n_steps' must be an integer, got 'many'"),
    ("algo_kwargs", "n_steps", 1.5, r"'algo_kwargs.n_steps' must be an integer"),
    ("algo_kwargs", "gamma", "high", r"'algo_kwargs.gamma' must be a number"),
    ("algo_kwargs", "learning_rate", "fast", r"'algo_kwargs.learning_rate' must be a number or a schedule"),
    ("algo_kwargs", "learning_rate", "lin_x", r"not a linear schedule like 'lin_1e-3'"),
    ("policy_kwargs", "deep_nlms", "yes", r"'policy_kwargs.deep_nlms' must be true or false"),
    ("policy_kwargs", "activation_fn", "nn.Relu", r"cannot import 'nn'"),
    ("policy_kwargs", "net_arch", 64, r"'policy_kwargs.net_arch' must be null or a list or a mapping"),
])
def test_bad_options(section, name, value, message):
    config = build_dataclass(ExperimentConfig, {"env": {"id": "CartPole-v1"}, section: {name: value}})
    with pytest.raises(ConfigError, match=message):
        resolve_options(get_agent("ctm"), config, "CTMPolicy")


@pytest.mark.parametrize("agent", list(AGENTS))
def test_every_agent_checks_and_converts_option_values(agent):
    """Including SB3's PPO, whose signature names a type that only type checkers import."""
    spec = get_agent(agent)
    config = build_dataclass(ExperimentConfig, {"env": {"id": "CartPole-v1"}, "agent": agent,
                                                "algo_kwargs": {"learning_rate": "lin_3e-4"}})
    assert isinstance(resolve_options(spec, config, spec.policy).algo_kwargs["learning_rate"], LinearSchedule)
    config.algo_kwargs["n_steps"] = "many"
    with pytest.raises(ConfigError, match="'algo_kwargs.n_steps' must be an integer"):
        resolve_options(spec, config, spec.policy)


def test_bad_option_values_found_by_the_constructor_are_config_errors():
    config = tiny_config()
    config.policy_kwargs["neuron_select_type"] = "sideways"
    with pytest.raises(ConfigError, match="cannot build agent 'ctm' from this config: neuron_select_type"):
        build_model(config, make_env(config, get_agent("ctm"), n_envs=2, seed=0, training=True))


@pytest.mark.parametrize("agent", list(AGENTS))
def test_every_agent_trains_from_the_same_config_and_round_trips(agent, tmp_path):
    config = tiny_config(agent, normalize_reward=True)
    spec = get_agent(agent)
    env = make_env(config, spec, n_envs=2, seed=0, training=True)
    model, _ = build_model(config, env)
    assert isinstance(model, spec.algo) and isinstance(model.get_vec_normalize_env(), VecNormalize)
    assert isinstance(env, VecFrameStack) == (agent == "framestack")
    model.learn(64)
    path = tmp_path / "model.zip"
    save_model(model, path)
    assert path.is_file() and vecnormalize_path(path).is_file()

    eval_env = make_env(config, spec, n_envs=1, seed=1, training=False,
                        normalize_stats=vecnormalize_path(path))
    normalization = eval_env.venv if agent == "framestack" else eval_env
    assert not normalization.training and not normalization.norm_reward
    np.testing.assert_allclose(normalization.ret_rms.var, model.get_vec_normalize_env().ret_rms.var)
    loaded = load_model(spec, path, env=eval_env, device="cpu")
    obs = eval_env.reset()
    state = None
    for _ in range(3):
        expected, _ = model.predict(obs, state=state, deterministic=True)
        actions, state = loaded.predict(obs, state=state, deterministic=True)
        np.testing.assert_array_equal(actions, expected)
        obs, *_ = eval_env.step(actions)


def test_minigrid_grids_are_embedded_by_the_ctm_and_flattened_for_the_others():
    config = tiny_config("ctm", "MiniGrid-Empty-5x5-v0", wrappers=["minigrid.wrappers.ImgObsWrapper"])
    assert probe_spaces(config.env, get_agent("ctm"))[0].shape == (7, 7, 3)
    for agent in ("lstm", "mlp"):
        assert probe_spaces(config.env, get_agent(agent))[0].shape == (147,)
    assert probe_spaces(config.env, get_agent("framestack"))[0].shape == (147,)
    env = make_env(config, get_agent("framestack"), n_envs=1, seed=0, training=False)
    assert env.observation_space.shape == (4 * 147,)


def test_dict_observations_with_grids_are_one_vector_for_the_baselines():
    # The navigation envs observe {"image": 7x7x3 index grid, "direction": Discrete(4)}: the CTM embeds
    # the grid; the others see one vector (one-hot direction), which VecFrameStack can also stack.
    config = tiny_config("mlp", "CTM/Memory-L4-v0")
    assert isinstance(probe_spaces(config.env, get_agent("ctm"))[0], spaces.Dict)
    for agent in ("lstm", "mlp", "framestack"):
        assert probe_spaces(config.env, get_agent(agent))[0].shape == (147 + 4,)
    env = make_env(config, get_agent("framestack"), n_envs=1, seed=0, training=False)
    assert env.observation_space.shape == (4 * (147 + 4),)


def test_minigrid_without_its_image_wrapper_is_explained():
    config = tiny_config("mlp", "MiniGrid-Empty-5x5-v0")
    with pytest.raises(ConfigError, match="add minigrid.wrappers.ImgObsWrapper to env.wrappers"):
        probe_spaces(config.env, get_agent("mlp"))


def test_minigrid_grids_cannot_be_normalised():
    config = tiny_config("ctm", "MiniGrid-Empty-5x5-v0", wrappers=["minigrid.wrappers.ImgObsWrapper"],
                         normalize_obs=True)
    with pytest.raises(ConfigError, match="normalize_obs cannot be used with MiniGrid"):
        make_env(config, get_agent("ctm"), n_envs=1, seed=0, training=True)


def test_spaces_the_agents_cannot_handle():
    box = spaces.Box(-1, 1, (3,))
    with pytest.raises(ConfigError, match="cannot produce actions in Tuple"):
        check_spaces(get_agent("ctm"), box, spaces.Tuple([spaces.Discrete(2)] * 2))
    with pytest.raises(ConfigError, match="cannot read the observation, a Text space"):
        check_spaces(get_agent("mlp"), spaces.Text(5), spaces.Discrete(2))
    with pytest.raises(ConfigError, match="stacks frames and needs Box observations"):
        check_spaces(get_agent("framestack"), spaces.Discrete(3), spaces.Discrete(2))
    check_spaces(get_agent("lstm"), spaces.Dict({"a": box, "b": spaces.Discrete(3)}), spaces.MultiBinary(2))


@pytest.mark.parametrize("env_config, message", [
    ({"wrappers": ["gymnasium.wrappers.NoSuchWrapper"]}, r"env.wrappers\[0\]'.*has no 'NoSuchWrapper'"),
    ({"wrappers": [{"a.B": 1, "c.D": 2}]}, r"must be 'module.Class' or"),
    ({"env_kwargs": {"no_such_argument": 1}}, r"cannot make env 'CartPole-v1': TypeError"),
])
def test_env_config_errors(env_config, message):
    config = tiny_config("mlp", "CartPole-v1", **env_config)
    with pytest.raises(ConfigError, match=message):
        probe_spaces(config.env, get_agent("mlp"))


def test_unknown_env_id_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown env id 'CTM/CartPoleNoVel-v0' \(did you mean "
                                          r"'CTM/CartPoleNoVel-v1'\?\)"):
        probe_spaces(tiny_config(env_id="CTM/CartPoleNoVel-v0").env, get_agent("ctm"))


def test_wrappers_with_arguments_and_time_limits_apply():
    config = tiny_config("mlp", "CartPole-v1", max_episode_steps=7, wrappers=[
        "gymnasium.wrappers.TimeAwareObservation",
        {"gymnasium.wrappers.TimeAwareObservation": {"normalize_time": True}},
    ])
    assert probe_spaces(config.env, get_agent("mlp"))[0].shape == (6,)
    env = make_env(config, get_agent("mlp"), n_envs=1, seed=0, training=False)
    env.reset()
    for _ in range(7):
        _, _, dones, infos = env.step(np.zeros(1, dtype=int))
    # The pole does not fall in 7 steps: the time limit ends the episode.
    assert dones[0] and infos[0]["TimeLimit.truncated"]
    np.testing.assert_allclose(infos[0]["terminal_observation"][4:], [7.0, 1.0])


def test_official_env_masks_velocities_and_applies_the_step_limit():
    env = official_env({"env_id": "CartPole-v1", "max_environment_steps": 5})
    obs, _ = env.reset(seed=0)
    for step in range(1, 10):
        obs, _, terminated, truncated, _ = env.step(0)
        assert obs[1] == 0 and obs[3] == 0 and obs[0] != 0
        if terminated or truncated:
            break
    assert step <= 5
    unmasked = official_env({"env_id": "CartPole-v1", "mask_velocity": False})
    assert unmasked.reset(seed=0)[0][1] != 0


def test_official_minigrid_env_sees_the_image_with_the_step_limit():
    env = official_env({"env_id": "MiniGrid-FourRooms-v0", "max_environment_steps": 300})
    assert env.observation_space.shape == (7, 7, 3) and env.unwrapped.max_steps == 300


def test_loading_a_foreign_or_corrupt_file_is_a_model_file_error(tmp_path):
    config = tiny_config("mlp", "CartPole-v1")
    env = make_env(config, get_agent("mlp"), n_envs=1, seed=0, training=False)
    model, _ = build_model(config, env)
    ppo_path = tmp_path / "ppo.zip"
    model.save(ppo_path)
    with pytest.raises(ModelFileError, match=r"cannot load .*ppo.zip as a 'ctm' model \(CTMPPO\)"):
        load_model(get_agent("ctm"), ppo_path)
    with pytest.raises(ModelFileError, match=r"as a 'lstm' model \(RecurrentPPO\)"):
        load_model(get_agent("lstm"), ppo_path)
    ctm_config = tiny_config("ctm", "CartPole-v1")
    ctm_path = tmp_path / "ctm.zip"
    ctm_env = make_env(ctm_config, get_agent("ctm"), n_envs=1, seed=0, training=False)
    build_model(ctm_config, ctm_env)[0].save(ctm_path)
    with pytest.raises(ModelFileError, match="holds a CTMPolicy, not a policy of agent 'mlp'"):
        load_model(get_agent("mlp"), ctm_path)  # PPO would run it, wrongly: the check stops it
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(ModelFileError, match="cannot load"):
        load_model(get_agent("mlp"), garbage)
    with pytest.raises(ModelFileError, match="model file not found"):
        load_model(get_agent("mlp"), tmp_path / "missing.zip")
