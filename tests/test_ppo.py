"""CTMPPO and CTMPolicy as a recurrent learner: state alignment, GAE, predict, save/load, learning."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from ctm_rl import CTMPPO
from ctm_rl.ctm import CTMState
from tests.memory_env import CountingEnv, CueRecallEnv

TINY = dict(d_model=16, d_input=8, n_synch_out=6, iterations=2, memory_length=4, memory_hidden_dims=2)


def cartpole_model(bptt_steps=None, n_steps=48, n_envs=3, seed=0, **kwargs) -> CTMPPO:
    # Short time limits put episode starts and truncations inside every sequence.
    env = make_vec_env("CartPole-v1", n_envs=n_envs, seed=seed, env_kwargs=dict(max_episode_steps=14))
    return CTMPPO("CTMPolicy", env, n_steps=n_steps, batch_size=32, n_epochs=1, bptt_steps=bptt_steps, seed=seed,
                  policy_kwargs=TINY, **kwargs)


def collect(model: CTMPPO) -> None:
    _, callback = model._setup_learn(model.n_steps * model.n_envs, None)
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)


@pytest.mark.parametrize("bptt_steps", [None, 8])
def test_reevaluating_a_rollout_reproduces_log_probs_and_values(bptt_steps):
    model = cartpole_model(bptt_steps)
    collect(model)
    buffer = model.rollout_buffer
    assert buffer.episode_starts[1:].sum() > 0, "the test needs episode starts inside sequences"
    model.policy.set_training_mode(False)
    n_batches = 0
    for batch in buffer.get(batch_size=16):
        with torch.no_grad():
            values, log_prob, _ = model.policy.evaluate_actions(
                batch.observations, batch.actions.long().flatten(), batch.states, batch.episode_starts
            )
        np.testing.assert_allclose(values.flatten().numpy(), batch.old_values.numpy(), atol=1e-5)
        np.testing.assert_allclose(log_prob.numpy(), batch.old_log_prob.numpy(), atol=1e-5)
        n_batches += 1
    expected_sequences = model.n_envs * (model.n_steps // (bptt_steps or model.n_steps))
    expected_batches = -(-expected_sequences // max(1, round(16 / (bptt_steps or model.n_steps))))
    assert n_batches == expected_batches


def test_chunked_buffer_stores_one_state_per_chunk():
    model = cartpole_model(bptt_steps=8)
    collect(model)
    assert model.rollout_buffer.chunk_states.shape == (2, 48 // 8, 3, 16, 4)
    full = cartpole_model(bptt_steps=None)
    assert full.rollout_buffer.chunk_states.shape == (2, 1, 3, 16, 4)


def test_bptt_steps_must_divide_n_steps():
    with pytest.raises(ValueError, match="multiple of bptt_steps"):
        cartpole_model(bptt_steps=7)


def plain_gae(rewards, values, episode_starts, last_values, last_dones, gamma, lam):
    """Textbook GAE, one env and one step at a time."""
    n_steps, n_envs = rewards.shape
    advantages = np.zeros_like(rewards)
    for env in range(n_envs):
        running = 0.0
        for t in reversed(range(n_steps)):
            if t == n_steps - 1:
                next_value, next_non_terminal = last_values[env], 1.0 - last_dones[env]
            else:
                next_value, next_non_terminal = values[t + 1, env], 1.0 - episode_starts[t + 1, env]
            delta = rewards[t, env] + gamma * next_value * next_non_terminal - values[t, env]
            running = delta + gamma * lam * next_non_terminal * running
            advantages[t, env] = running
    return advantages


def test_gae_with_time_limit_truncation_matches_plain_computation():
    limit, n_envs, n_steps = 5, 2, 12
    env = make_vec_env(CountingEnv, n_envs=n_envs, seed=3, wrapper_class=gym.wrappers.TimeLimit,
                       wrapper_kwargs=dict(max_episode_steps=limit))
    model = CTMPPO("CTMPolicy", env, n_steps=n_steps, batch_size=12, seed=3, gamma=0.9, gae_lambda=0.8,
                   policy_kwargs=TINY)
    obs_log = []
    real_step = model.env.step_wait

    def logging_step_wait():
        result = real_step()
        obs_log.append([info.get("terminal_observation") for info in result[3]])
        return result

    model.env.step_wait = logging_step_wait
    collect(model)
    buffer = model.rollout_buffer

    # Recompute every truncated step's bootstrap by replaying the episode from the start traces.
    policy = model.policy
    for e in range(n_envs):
        state = None
        for t in range(n_steps):
            start = np.array([buffer.episode_starts[t, e]], dtype=bool)
            obs = buffer.observations[t, e][None]
            _, state = policy.predict(obs, state, start)
            final = obs_log[t][e]
            if final is None:
                assert buffer.rewards[t, e] == pytest.approx(1.0)
                continue
            with torch.no_grad():
                tensor_state = CTMState(*(torch.as_tensor(s) for s in state))
                value = policy.predict_values(torch.as_tensor(final[None]), tensor_state, torch.zeros(1)).item()
            assert buffer.rewards[t, e] == pytest.approx(1.0 + 0.9 * value, abs=1e-5)
    assert (np.array([[o is not None for o in row] for row in obs_log]).sum()) >= n_envs * 2

    # And GAE over the stored rollout equals the textbook computation.
    with torch.no_grad():
        last_values = model.policy.predict_values(
            torch.as_tensor(model._last_obs), model._last_ctm_state,
            torch.as_tensor(model._last_episode_starts, dtype=torch.float32),
        ).flatten().numpy()
    expected = plain_gae(buffer.rewards, buffer.values, buffer.episode_starts, last_values,
                         model._last_episode_starts.astype(np.float32), 0.9, 0.8)
    np.testing.assert_allclose(buffer.advantages, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(buffer.returns, expected + buffer.values, rtol=1e-5, atol=1e-5)


def test_step_by_step_predict_equals_sequence_evaluation():
    model = cartpole_model()
    policy = model.policy
    rng = np.random.default_rng(0)
    n_envs, steps = 3, 9
    observations = rng.normal(size=(steps, n_envs, 4)).astype(np.float32)
    starts = np.zeros((steps, n_envs), dtype=bool)
    starts[0] = True
    starts[4, 1] = starts[6, 2] = True
    actions = rng.integers(0, 2, size=(steps, n_envs))

    state = None
    step_log_probs = []
    for t in range(steps):
        with torch.no_grad():
            obs = torch.as_tensor(observations[t])
            ctm_state = policy.ctm.initial_state(n_envs) if state is None else state
            distribution, state = policy.get_distribution(obs, ctm_state, torch.as_tensor(starts[t]).float())
            step_log_probs.append(distribution.log_prob(torch.as_tensor(actions[t])).numpy())
    with torch.no_grad():
        _, log_prob, _ = policy.evaluate_actions(
            torch.as_tensor(observations.reshape(-1, 4)), torch.as_tensor(actions.reshape(-1)),
            policy.ctm.initial_state(n_envs), torch.as_tensor(starts.reshape(-1)).float(),
        )
    np.testing.assert_allclose(log_prob.numpy(), np.concatenate(step_log_probs), atol=1e-6)


def test_predict_api_matches_recurrent_ppo_conventions():
    model = cartpole_model()
    obs = np.zeros((3, 4), dtype=np.float32)
    actions, state = model.predict(obs)
    assert actions.shape == (3,) and isinstance(state, tuple) and len(state) == 2
    assert state[0].shape == (3, 16, 4) and isinstance(state[0], np.ndarray)
    single_action, single_state = model.predict(obs[0])
    assert np.ndim(single_action) == 0 and single_state[0].shape == (1, 16, 4)
    # An episode start resets the traces: any carried state gives the same result as a fresh start.
    _, after_reset = model.predict(obs, state, episode_start=np.ones(3, dtype=bool))
    _, fresh = model.predict(obs)
    np.testing.assert_allclose(after_reset[0], fresh[0], atol=1e-6)
    _, carried = model.predict(obs, state, episode_start=np.zeros(3, dtype=bool))
    assert not np.allclose(carried[1], fresh[1])


def test_save_load_gives_identical_actions(tmp_path):
    model = cartpole_model()
    model.learn(96)
    model.save(tmp_path / "model.zip")
    loaded = CTMPPO.load(tmp_path / "model.zip")
    obs = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    state = model.policy.initial_state(3)
    for _ in range(4):
        a1, s1 = model.predict(obs, state, deterministic=True)
        a2, s2 = loaded.predict(obs, state, deterministic=True)
        np.testing.assert_array_equal(a1, a2)
        np.testing.assert_allclose(s1[1], s2[1], atol=0)
        state = s1
    assert loaded.policy.ctm.iterations == 2 and loaded.bptt_steps is None


def test_memory_task_is_solved_by_the_ctm_but_not_by_a_feed_forward_policy():
    # Learn to recall a cue shown only at the first step of a 3-step episode.
    env = make_vec_env(CueRecallEnv, n_envs=8, seed=0)
    ctm = CTMPPO("CTMPolicy", env, n_steps=24, batch_size=192, n_epochs=4, learning_rate=3e-3, ent_coef=0.01,
                 seed=0, policy_kwargs=dict(d_model=16, d_input=16, n_synch_out=8, iterations=1, memory_length=4))
    ctm.learn(3000)
    ctm_return, _ = evaluate_policy(ctm, make_vec_env(CueRecallEnv, n_envs=4, seed=100), n_eval_episodes=100)

    mlp = PPO("MlpPolicy", make_vec_env(CueRecallEnv, n_envs=8, seed=0), n_steps=24, batch_size=48, n_epochs=4,
              learning_rate=3e-3, seed=0)
    mlp.learn(3000)
    mlp_return, _ = evaluate_policy(mlp, make_vec_env(CueRecallEnv, n_envs=4, seed=100), n_eval_episodes=100)
    assert ctm_return >= 0.95, ctm_return
    assert mlp_return <= 0.7, mlp_return
