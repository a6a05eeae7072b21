"""CTMPPO in the Stable-Baselines3 ecosystem: spaces, vec envs, wrappers, callbacks, authors' checkpoints."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from minigrid.wrappers import ImgObsWrapper
from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import (
    IdentityEnv,
    IdentityEnvBox,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
    SimpleMultiObsEnv,
)
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecMonitor, VecNormalize

from agents import official_env
from ctm_rl import CTMPPO
from ctm_rl.backbones import ClassicControlBackbone, DictBackbone, MiniGridBackbone
from ctm_rl.official import CheckpointError

TINY = dict(d_model=12, d_input=8, n_synch_out=4, iterations=1, memory_length=3)
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize(
    "make_env",
    [lambda: IdentityEnv(3), lambda: IdentityEnvBox(), lambda: IdentityEnvMultiDiscrete(3),
     lambda: IdentityEnvMultiBinary(3)],
    ids=["Discrete", "Box", "MultiDiscrete", "MultiBinary"],
)
def test_every_action_space_trains_and_predicts(make_env):
    env = make_env()
    model = CTMPPO("CTMPolicy", env, n_steps=16, batch_size=16, n_epochs=1, seed=0, policy_kwargs=TINY)
    model.learn(32)
    action, _ = model.predict(env.reset(seed=0)[0])
    assert env.action_space.contains(np.asarray(action, dtype=env.action_space.dtype))


def test_minigrid_grids_are_embedded_not_treated_as_images():
    env = make_vec_env("MiniGrid-Empty-5x5-v0", n_envs=2, seed=0, wrapper_class=ImgObsWrapper)
    model = CTMPPO("CTMPolicy", env, n_steps=8, batch_size=16, n_epochs=1, seed=0, policy_kwargs=TINY)
    model.learn(16)
    assert model.get_env().observation_space.shape == (7, 7, 3)  # not transposed to (3, 7, 7)
    assert isinstance(model.policy.features_extractor.net, MiniGridBackbone)
    assert model.policy.normalize_images is False


def test_dict_observations_use_one_backbone_per_key():
    model = CTMPPO("MultiInputCTMPolicy", SimpleMultiObsEnv(random_start=False), n_steps=8, batch_size=8,
                   n_epochs=1, seed=0, policy_kwargs=TINY)
    model.learn(16)
    assert isinstance(model.policy.features_extractor.net, DictBackbone)


def make_pendulum() -> gym.Env:
    return gym.make("Pendulum-v1")


def test_subproc_vecnormalize_vecmonitor_and_callbacks(tmp_path):
    env = VecNormalize(VecMonitor(SubprocVecEnv([make_pendulum, make_pendulum])))
    eval_env = VecNormalize(VecMonitor(DummyVecEnv([make_pendulum])), training=False, norm_reward=False)
    callbacks = [
        EvalCallback(eval_env, n_eval_episodes=1, eval_freq=16, best_model_save_path=str(tmp_path), verbose=0),
        CheckpointCallback(save_freq=16, save_path=str(tmp_path / "ckpt"), save_vecnormalize=True),
    ]
    try:
        model = CTMPPO("CTMPolicy", env, n_steps=16, batch_size=32, n_epochs=1, seed=0, policy_kwargs=TINY)
        model.learn(64, callback=callbacks)
    finally:
        env.close()
    assert (tmp_path / "best_model.zip").exists()
    assert any((tmp_path / "ckpt").glob("*.zip")) and any((tmp_path / "ckpt").glob("*vecnormalize*.pkl"))
    mean, _ = evaluate_policy(model, eval_env, n_eval_episodes=1)
    assert np.isfinite(mean)


def test_schedules_and_value_clipping_are_accepted():
    model = CTMPPO("CTMPolicy", "CartPole-v1", n_steps=16, batch_size=16, n_epochs=2, seed=0, policy_kwargs=TINY,
                   learning_rate=lambda p: 1e-3 * p, clip_range=lambda p: 0.2 * p, clip_range_vf=0.2, target_kl=0.01)
    model.learn(32)
    assert model.policy.optimizer.param_groups[0]["lr"] < 1e-3


@pytest.mark.parametrize("name, backbone", [("cartpole_tiny", ClassicControlBackbone),
                                            ("minigrid_tiny", MiniGridBackbone)])
def test_from_official_checkpoint_builds_a_ready_model(name, backbone):
    model = CTMPPO.from_official_checkpoint(FIXTURES / f"{name}.checkpoint.pt")
    assert isinstance(model.policy.features_extractor.net, backbone)
    assert model.official_args["env_id"] in ("CartPole-v1", "MiniGrid-FourRooms-v0")
    obs, _ = official_env(model.official_args).reset(seed=0)
    action, state = model.predict(obs, deterministic=True)
    assert model.action_space.contains(int(action)) and state[0].shape[0] == 1


def test_from_official_checkpoint_fine_tunes_on_a_given_env():
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = CTMPPO.from_official_checkpoint(FIXTURES / "cartpole_tiny.checkpoint.pt", env=env, n_steps=8,
                                            batch_size=16, n_epochs=1)
    model.learn(16)
    assert model.num_timesteps > 0


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        CTMPPO.from_official_checkpoint(bad)
    with pytest.raises(CheckpointError, match="not found"):
        CTMPPO.from_official_checkpoint(tmp_path / "missing.pt")


def test_cuda_device_if_available():
    if not __import__("torch").cuda.is_available():
        pytest.skip("no CUDA device")
    model = CTMPPO("CTMPolicy", gym.make("CartPole-v1"), n_steps=16, batch_size=16, n_epochs=1, device="cuda",
                   policy_kwargs=TINY)
    model.learn(32)
    assert next(model.policy.parameters()).is_cuda
