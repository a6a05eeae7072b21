"""Tests of ctm_rl.viz: recordings, media files, animation frame counts and the TensorBoard callback.

Episodes are cut short (``max_steps``) and models are tiny, so the whole file runs in well under a minute.
"""

from __future__ import annotations

import glob
import importlib.util
from pathlib import Path

import gymnasium as gym
import imageio.v3 as iio
import minigrid  # noqa: F401  (registers the MiniGrid ids)
import numpy as np
import pytest
import torch
from minigrid.wrappers import ImgObsWrapper, RGBImgPartialObsWrapper
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from agents import official_env
from ctm_rl import CTMPPO
from ctm_rl.viz import (
    DynamicsAnimator,
    NeuralDynamicsCallback,
    Recording,
    contact_sheet,
    frame_schedule,
    pca_2d,
    record_episode,
    select_neurons,
    sync_matrix,
    write_episode_media,
)

FIXTURES = Path(__file__).parent / "fixtures"
TINY = {"d_model": 16, "d_input": 8, "n_synch_out": 4, "iterations": 2, "memory_length": 4}


def official(name: str) -> tuple[CTMPPO, gym.Env]:
    model = CTMPPO.from_official_checkpoint(FIXTURES / f"{name}.checkpoint.pt", device="cpu")
    return model, official_env(model.official_args, render_mode="rgb_array")


def tiny_model(env: gym.Env, policy: str = "CTMPolicy", **policy_kwargs) -> CTMPPO:
    return CTMPPO(policy, env, policy_kwargs={**TINY, **policy_kwargs}, n_steps=16, batch_size=16, n_epochs=1,
                  seed=0, device="cpu")


def minigrid_env() -> gym.Env:
    return ImgObsWrapper(gym.make("MiniGrid-Empty-5x5-v0", render_mode="rgb_array"))


def pixel_env() -> gym.Env:
    return ImgObsWrapper(RGBImgPartialObsWrapper(gym.make("MiniGrid-Empty-5x5-v0", render_mode="rgb_array")))


def gif_frames(path: Path) -> np.ndarray:
    return iio.imread(path, index=None)


# --- recordings --------------------------------------------------------------------------------------------


def test_recording_shapes_on_authors_cartpole_checkpoint():
    model, env = official("cartpole_tiny")
    rec = record_episode(model, env, seed=0, max_steps=6)
    ctm = model.policy.ctm
    T, K, D, S = rec.n_steps, ctm.iterations, ctm.d_model, ctm.synch_size
    assert 1 <= T <= 6 and rec.n_ticks == K == 2 and rec.n_neurons == D
    assert rec.pre.shape == rec.post.shape == (T, K, D)
    assert rec.sync.shape == (T, K, S)
    assert rec.tick_action_probs.shape == (T, K, 2) and rec.action_probs.shape == (T, 2)
    assert rec.tick_values.shape == rec.certainty.shape == (T, K)
    assert rec.frames is not None and rec.frames.shape[0] == T and rec.frames.shape[-1] == 3
    assert max(rec.frames.shape[1:3]) <= 400  # shrunk from CartPole's 600x400
    assert rec.observations.shape == (T, 4) and rec.actions.shape == (T,) and rec.rewards.shape == (T,)
    np.testing.assert_allclose(rec.tick_action_probs.sum(-1), 1.0, atol=1e-5)
    assert np.all((rec.certainty >= -1e-6) & (rec.certainty <= 1 + 1e-6))
    # The agent acts on the last tick.
    np.testing.assert_allclose(rec.values, rec.tick_values[:, -1], atol=1e-5)
    np.testing.assert_allclose(rec.action_probs, rec.tick_action_probs[:, -1])
    assert rec.action_names == ["push left", "push right"]


def test_recording_starts_from_start_traces_and_matches_predict():
    """Replaying the recorded observations through ``predict`` (episode_start on step 0) gives the same
    actions and the same final post-activations: the recording is the agent's real behaviour."""
    model, env = official("cartpole_tiny")
    rec = record_episode(model, env, seed=3, max_steps=8)
    # Start from deliberately wrong histories: episode_start must replace them by the start traces.
    state = tuple(np.full((1, *model.policy.state_shape), 5.0, dtype=np.float32) for _ in range(2))
    for t in range(rec.n_steps):
        action, state = model.predict(rec.observations[t][None], state, np.array([t == 0]), deterministic=True)
        assert int(action[0]) == int(rec.actions[t])
        np.testing.assert_allclose(state[1][0, :, -1], rec.post[t, -1], atol=1e-5)


def test_npz_round_trip(tmp_path):
    model, env = official("minigrid_tiny")
    rec = record_episode(model, env, seed=1, max_steps=3)
    path = rec.save(tmp_path / "episode")  # the suffix is added
    assert path == tmp_path / "episode.npz" and path.exists()
    back = Recording.load(path)
    for name in ("frames", "observations", "actions", "rewards", "values", "pre", "post", "sync",
                 "tick_action_probs", "tick_values", "certainty", "synch_left", "synch_right"):
        np.testing.assert_array_equal(getattr(back, name), getattr(rec, name), err_msg=name)
    assert back.meta["env_id"] == "MiniGrid-FourRooms-v0" and back.meta["format_version"] == 1
    assert back.action_names[:3] == ["left", "right", "forward"]


def test_minigrid_env_with_tiny_ctmppo():
    model = tiny_model(minigrid_env())
    rec = record_episode(model, minigrid_env(), seed=0, max_steps=5)
    assert rec.pre.shape == (5, 2, 16) and rec.sync.shape == (5, 2, 4 * 5 // 2)
    assert rec.observations.shape == (5, 7, 7, 3) and rec.frames.shape[0] == 5
    assert rec.action_names == ["left", "right", "forward", "pickup", "drop", "toggle", "done"]
    assert rec.meta["stopped_at_max_steps"]


def test_single_env_vecnormalize_is_left_as_it_was():
    venv = VecNormalize(DummyVecEnv([lambda: gym.make("CartPole-v1", render_mode="rgb_array")]))
    model = tiny_model(venv)
    mean_before = venv.obs_rms.mean.copy()
    rec = record_episode(model, venv, seed=0, deterministic=False, max_steps=10)
    assert venv.training and venv.norm_reward  # restored after the episode
    np.testing.assert_array_equal(venv.obs_rms.mean, mean_before)  # statistics untouched while watching
    assert rec.frames is not None and rec.frames.shape[0] == rec.n_steps
    np.testing.assert_array_equal(rec.rewards, 1.0)  # the env's own rewards, not normalised ones
    assert np.abs(rec.observations).max() < 5  # raw CartPole observations


def test_seeded_sampling_is_reproducible():
    model = tiny_model(gym.make("CartPole-v1"))
    env = gym.make("CartPole-v1")
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = record_episode(model, env, seed=7, deterministic=False, max_steps=12)
    assert torch.rand(1) == expected_next  # the caller's random stream is untouched
    second = record_episode(model, env, seed=7, deterministic=False, max_steps=12)
    np.testing.assert_array_equal(first.actions, second.actions)


def test_continuous_actions_have_nan_certainty():
    model = tiny_model(gym.make("Pendulum-v1"), neuron_select_type="random")
    rec = record_episode(model, gym.make("Pendulum-v1", render_mode="rgb_array"), seed=0, max_steps=3)
    assert rec.meta["action_kind"] == "continuous" and np.isnan(rec.certainty).all()
    assert rec.tick_action_probs.shape == (3, 2, 1)
    frame = DynamicsAnimator(rec, n_neurons=4).render(2, 1)
    assert frame.ndim == 3 and frame.dtype == np.uint8


# --- media -------------------------------------------------------------------------------------------------


def test_media_files_for_authors_minigrid_checkpoint(tmp_path):
    model, env = official("minigrid_tiny")
    rec = record_episode(model, env, seed=0, max_steps=4)
    paths = write_episode_media(rec, tmp_path, "ep0", n_neurons=6)
    assert [p.name for p in paths] == ["ep0.gif", "ep0_neurons.png", "ep0_sync_pca.png", "ep0.npz"]
    frames = gif_frames(paths[0])
    assert len(frames) == rec.n_steps * rec.n_ticks == 4 * 3  # one frame per internal tick
    for png in paths[1:3]:
        image = iio.imread(png)
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300
    assert Recording.load(paths[3]).n_steps == rec.n_steps


def test_pixel_env_media_with_frame_cap(tmp_path):
    model = tiny_model(pixel_env(), policy="CnnCTMPolicy")
    rec = record_episode(model, pixel_env(), seed=0, max_steps=5)
    assert rec.observations.shape == (5, 56, 56, 3) and rec.pre.shape == (5, 2, 16)
    paths = write_episode_media(rec, tmp_path, "pix", n_neurons=4, max_frames=6)
    # The documented rule: whole env steps at even spacing, max_frames // K of them.
    assert len(gif_frames(paths[0])) == len(frame_schedule(5, 2, 6)) == 3 * 2


def test_random_pairing_without_rendering_draws_observation_and_pair_vector(tmp_path):
    model = tiny_model(gym.make("CartPole-v1"), neuron_select_type="random-pairing")
    rec = record_episode(model, gym.make("CartPole-v1"), seed=0, max_steps=3)
    assert rec.frames is None and rec.sync.shape == (3, 2, 4)
    paths = write_episode_media(Recording.load(rec.save(tmp_path / "r.npz")), tmp_path, "rp", n_neurons=4)
    assert len(gif_frames(paths[0])) == 6


def test_mp4_without_ffmpeg_is_a_clear_error_before_drawing(tmp_path, monkeypatch):
    model, env = official("cartpole_tiny")
    rec = record_episode(model, env, seed=0, max_steps=2)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "imageio_ffmpeg" else real_find_spec(name, *a))
    with pytest.raises(RuntimeError, match="pip install imageio-ffmpeg"):
        write_episode_media(rec, tmp_path, "ep", fmt="mp4")
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="format"):
        write_episode_media(rec, tmp_path, "ep", fmt="avi")


@pytest.mark.skipif(importlib.util.find_spec("imageio_ffmpeg") is None, reason="imageio-ffmpeg not installed")
def test_mp4_is_written_when_ffmpeg_is_available(tmp_path):
    model, env = official("cartpole_tiny")
    rec = record_episode(model, env, seed=0, max_steps=3)
    paths = write_episode_media(rec, tmp_path, "ep", fmt="mp4", n_neurons=4)
    assert paths[0].suffix == ".mp4" and paths[0].stat().st_size > 0
    assert len(iio.imread(paths[0], index=None)) == rec.n_steps * rec.n_ticks


# --- helpers -----------------------------------------------------------------------------------------------


def test_frame_schedule_rule():
    assert frame_schedule(3, 2) == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    capped = frame_schedule(200, 2, max_frames=64)
    assert len(capped) == 64 and capped[0] == (0, 0) and capped[-1] == (199, 1)
    assert frame_schedule(10, 3, max_frames=2) == [(0, 0), (0, 1), (0, 2)]  # at least one whole step


def test_sync_matrix_pca_and_neuron_choice():
    n = 4
    vector = np.arange(n * (n + 1) // 2, dtype=float)
    matrix = sync_matrix(vector, n)
    np.testing.assert_array_equal(matrix, matrix.T)
    np.testing.assert_array_equal(matrix[np.triu_indices(n)], vector)
    rng = np.random.default_rng(0)
    points = rng.normal(size=(50, 2)) @ np.array([[3.0, 0, 0], [0, 1.0, 0]])
    coords, ratios = pca_2d(points)
    assert coords.shape == (50, 2) and ratios[0] > ratios[1] > 0 and ratios.sum() == pytest.approx(1.0)
    post = np.zeros((5, 2, 6))
    post[..., 4] = rng.normal(size=(5, 2))
    post[..., 1] = 0.1 * rng.normal(size=(5, 2))
    assert list(select_neurons(post, 2)) == [1, 4]
    assert list(select_neurons(post, 2, neurons=[5, 0])) == [0, 5]


def test_contact_sheet_shape():
    frames = [np.full((10, 20, 3), i, np.uint8) for i in range(9)]
    sheet = contact_sheet(frames, n_frames=4, columns=2, scale=1)
    assert sheet.shape == (2 * 10 + 4, 2 * 20 + 4, 3)


# --- training callback -------------------------------------------------------------------------------------


def test_callback_logs_images_to_tensorboard(tmp_path):
    model = CTMPPO("CTMPolicy", "CartPole-v1", policy_kwargs=TINY, n_steps=16, batch_size=16, n_epochs=1,
                   seed=0, device="cpu", tensorboard_log=str(tmp_path))
    callback = NeuralDynamicsCallback(gym.make("CartPole-v1", render_mode="rgb_array"), every_n_steps=16,
                                      n_neurons=4, max_frames=8, max_steps=5)
    model.learn(32, callback=callback)
    assert callback.last_recording is not None and callback.last_recording.n_steps <= 5
    events = glob.glob(str(tmp_path / "CTMPPO_1" / "events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(tmp_path / "CTMPPO_1"))
    accumulator.Reload()
    images = accumulator.Tags()["images"]
    assert {"dynamics/neurons", "dynamics/sync_pca"} <= set(images)
    assert "dynamics/episode_frames" in images or "dynamics/episode" in accumulator.Tags()["tensors"]
    assert [e.step for e in accumulator.Images("dynamics/neurons")] == [16, 32]

    # With a save_dir the same pictures also land on disk (drawn once, read back for TensorBoard).
    callback.save_dir = tmp_path / "media"
    callback.log_dynamics()
    assert sorted(p.name for p in (tmp_path / "media").glob("step_32*")) == [
        "step_32.gif", "step_32.npz", "step_32_neurons.png", "step_32_sync_pca.png"]


def test_one_step_one_tick_episode_still_draws(tmp_path):
    model = tiny_model(gym.make("CartPole-v1"), iterations=1)
    rec = record_episode(model, gym.make("CartPole-v1", render_mode="rgb_array"), seed=0, max_steps=1)
    assert rec.pre.shape == (1, 1, 16)
    paths = write_episode_media(rec, tmp_path, "one", n_neurons=40)  # more neurons than the CTM has
    assert len(gif_frames(paths[0])) == 1 and all(p.exists() for p in paths)
