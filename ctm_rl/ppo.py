"""CTMPPO: recurrent PPO for CTM policies, with the conventions of sb3-contrib's ``RecurrentPPO``.

Rollouts carry the CTM state from step to step (resetting it at episode starts) and store it once per
BPTT chunk.  Training re-runs the policy over whole sequences from their stored states, so gradients
flow back through ``bptt_steps`` env steps (the whole rollout by default, as the reference does).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Self, TypeVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import is_wrapped
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule, explained_variance, obs_as_tensor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv
from stable_baselines3.common.vec_env.patch_gym import _patch_env

from ctm_rl.backbones import has_symbolic_grid
from ctm_rl.buffer import CTMDictRolloutBuffer, CTMRolloutBuffer
from ctm_rl.ctm import CTMState
from ctm_rl.official import (
    checkpoint_args,
    load_reference_weights,
    policy_kwargs_from_args,
    read_checkpoint,
)
from ctm_rl.policy import CnnCTMPolicy, CTMPolicy, MultiInputCTMPolicy

SelfCTMPPO = TypeVar("SelfCTMPPO", bound="CTMPPO")


class CTMPPO(OnPolicyAlgorithm):
    """Proximal Policy Optimization (clip) for Continuous Thought Machine policies.

    Takes the same arguments as sb3-contrib's ``RecurrentPPO``, plus:

    :param bptt_steps: how many env steps gradients flow back through.  ``None`` (default): the whole
        rollout, from its first stored state (the reference's choice).  An integer: chunks of that many
        steps, each started from its stored state and run in parallel as one batch; ``n_steps`` must be a
        multiple of it.  ``batch_size`` (env steps per minibatch) is rounded to whole sequences.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "CTMPolicy": CTMPolicy,
        "CnnCTMPolicy": CnnCTMPolicy,
        "MultiInputCTMPolicy": MultiInputCTMPolicy,
    }
    policy: CTMPolicy

    def __init__(
        self,
        policy: str | type[CTMPolicy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 128,
        batch_size: int | None = 128,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: None | float | Schedule = None,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        target_kl: float | None = None,
        bptt_steps: int | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
            supported_action_spaces=(spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary),
        )
        if bptt_steps is not None and (not isinstance(bptt_steps, int) or bptt_steps < 1):
            raise ValueError(f"bptt_steps must be None or a positive integer, got {bptt_steps!r}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size!r}")
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.clip_range = clip_range
        self.clip_range_vf = clip_range_vf
        self.normalize_advantage = normalize_advantage
        self.target_kl = target_kl
        self.bptt_steps = bptt_steps
        self._last_ctm_state: CTMState | None = None
        if _init_setup_model:
            self._setup_model()

    # --- set-up ------------------------------------------------------------------------------------------

    @staticmethod
    def _wrap_env(env: GymEnv, verbose: int = 0, monitor_wrapper: bool = True) -> VecEnv:
        """SB3's wrapping, except that MiniGrid index grids are never transposed as if they were images."""
        if not has_symbolic_grid(env.observation_space):
            return OnPolicyAlgorithm._wrap_env(env, verbose, monitor_wrapper)
        if not isinstance(env, VecEnv):
            env = _patch_env(env)
            if monitor_wrapper and not is_wrapped(env, Monitor):
                env = Monitor(env)
            env = DummyVecEnv([lambda: env])
        return env

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(
            self.observation_space, self.action_space, self.lr_schedule, use_sde=self.use_sde, **self.policy_kwargs
        ).to(self.device)
        if not isinstance(self.policy, CTMPolicy):
            raise TypeError("CTMPPO needs a CTMPolicy (or a subclass)")
        buffer_class = CTMDictRolloutBuffer if isinstance(self.observation_space, spaces.Dict) else CTMRolloutBuffer
        self.rollout_buffer = buffer_class(
            self.n_steps,
            self.observation_space,
            self.action_space,
            state_shape=self.policy.state_shape,
            device=self.device,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
            chunk_length=self.bptt_steps,
        )
        self._last_ctm_state = self._initial_ctm_state(self.n_envs)
        self.clip_range = FloatSchedule(self.clip_range)
        if self.clip_range_vf is not None:
            if isinstance(self.clip_range_vf, (float, int)) and self.clip_range_vf <= 0:
                raise ValueError("clip_range_vf must be positive; pass None to deactivate value clipping")
            self.clip_range_vf = FloatSchedule(self.clip_range_vf)

    def _initial_ctm_state(self, n_envs: int) -> CTMState:
        return CTMState(*(s.detach().clone() for s in self.policy.ctm.initial_state(n_envs)))

    def _setup_learn(self, total_timesteps: int, callback: MaybeCallback = None, reset_num_timesteps: bool = True,
                     tb_log_name: str = "run", progress_bar: bool = False):
        total, callback = super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name,
                                               progress_bar)
        # After a load or an env change the carried state may not fit the envs; the first step of a
        # (re)started env resets it anyway, so start traces are the right value.
        if self._last_ctm_state is None or self._last_ctm_state.pre.shape[0] != self.n_envs:
            self._last_ctm_state = self._initial_ctm_state(self.n_envs)
        return total, callback

    # --- rollouts ----------------------------------------------------------------------------------------

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: CTMRolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """Collect ``n_rollout_steps`` per env with the current policy, carrying the CTM state."""
        assert self._last_obs is not None, "No previous observation was provided"
        self.policy.set_training_mode(False)
        n_steps = 0
        rollout_buffer.reset()
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)
        callback.on_rollout_start()
        state = self._last_ctm_state

        while n_steps < n_rollout_steps:
            if self.use_sde and self.sde_sample_freq > 0 and n_steps % self.sde_sample_freq == 0:
                self.policy.reset_noise(env.num_envs)

            with torch.no_grad():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)
                episode_starts = torch.as_tensor(self._last_episode_starts, dtype=torch.float32, device=self.device)
                actions, values, log_probs, new_state = self.policy(obs_tensor, state, episode_starts)
            actions = actions.cpu().numpy()
            clipped_actions = actions
            if isinstance(self.action_space, spaces.Box):
                clipped_actions = np.clip(actions, self.action_space.low, self.action_space.high)

            new_obs, rewards, dones, infos = env.step(clipped_actions)
            self.num_timesteps += env.num_envs
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)
            n_steps += 1

            if isinstance(self.action_space, spaces.Discrete):
                actions = actions.reshape(-1, 1)
            self._bootstrap_truncated(rewards, dones, infos, new_state)

            rollout_buffer.add_state(state)
            rollout_buffer.add(self._last_obs, actions, rewards, self._last_episode_starts, values, log_probs)
            self._last_obs = new_obs
            self._last_episode_starts = dones
            state = new_state
        self._last_ctm_state = state

        with torch.no_grad():
            episode_starts = torch.as_tensor(dones, dtype=torch.float32, device=self.device)
            values = self.policy.predict_values(obs_as_tensor(new_obs, self.device), state, episode_starts)
        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)
        callback.on_rollout_end()
        return True

    def _bootstrap_truncated(self, rewards: np.ndarray, dones: np.ndarray, infos: list[dict], state: CTMState) -> None:
        """Add ``gamma * V(final observation)`` to the reward of time-limit truncated episodes.

        The final observation is valued with the state the env carried into it, in one batched call.
        """
        truncated = [
            i for i, done in enumerate(dones)
            if done and infos[i].get("terminal_observation") is not None and infos[i].get("TimeLimit.truncated")
        ]
        if not truncated:
            return
        final_obs = [infos[i]["terminal_observation"] for i in truncated]
        if isinstance(final_obs[0], dict):
            batch = {key: np.stack([o[key] for o in final_obs]) for key in final_obs[0]}
        else:
            batch = np.stack(final_obs)
        with torch.no_grad():
            obs_tensor = self.policy.obs_to_tensor(batch)[0]
            index = torch.as_tensor(truncated, device=self.device)
            sub_state = CTMState(state.pre[index], state.post[index])
            no_reset = torch.zeros(len(truncated), device=self.device)
            final_values = self.policy.predict_values(obs_tensor, sub_state, no_reset).flatten().cpu().numpy()
        rewards[truncated] += self.gamma * final_values

    # --- training ----------------------------------------------------------------------------------------

    def train(self) -> None:
        """Update the policy on the collected rollout, re-running it over whole sequences."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)
        clip_range_vf = self.clip_range_vf(self._current_progress_remaining) if self.clip_range_vf else None

        entropy_losses, pg_losses, value_losses, clip_fractions, approx_kl_divs = [], [], [], [], []
        continue_training = True
        for epoch in range(self.n_epochs):
            approx_kl_divs = []
            for batch in self.rollout_buffer.get(self.batch_size):
                actions = batch.actions
                if isinstance(self.action_space, spaces.Discrete):
                    actions = actions.long().flatten()
                elif isinstance(self.action_space, spaces.MultiBinary):
                    actions = actions.float()  # stored as int8; Bernoulli log-probs need floats
                values, log_prob, entropy = self.policy.evaluate_actions(
                    batch.observations, actions, batch.states, batch.episode_starts
                )
                values = values.flatten()
                advantages = batch.advantages
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

                ratio = torch.exp(log_prob - batch.old_log_prob)
                policy_loss = -torch.min(
                    advantages * ratio, advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
                ).mean()
                if clip_range_vf is None:
                    values_pred = values
                else:
                    values_pred = batch.old_values + torch.clamp(values - batch.old_values, -clip_range_vf,
                                                                 clip_range_vf)
                value_loss = torch.mean((batch.returns - values_pred) ** 2)
                entropy_loss = -torch.mean(-log_prob) if entropy is None else -torch.mean(entropy)
                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss

                pg_losses.append(policy_loss.item())
                value_losses.append(value_loss.item())
                entropy_losses.append(entropy_loss.item())
                with torch.no_grad():
                    clip_fractions.append(torch.mean((torch.abs(ratio - 1) > clip_range).float()).item())
                    log_ratio = log_prob - batch.old_log_prob
                    approx_kl_div = torch.mean((torch.exp(log_ratio) - 1) - log_ratio).item()
                    approx_kl_divs.append(approx_kl_div)
                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                    break

                self.policy.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
            self._n_updates += 1
            if not continue_training:
                break

        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())
        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/approx_kl", np.mean(approx_kl_divs))
        self.logger.record("train/clip_fraction", np.mean(clip_fractions))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_var)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", torch.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)

    def learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "CTMPPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> Self:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_last_ctm_state"]

    # --- the authors' checkpoints ------------------------------------------------------------------------

    @classmethod
    def from_official_checkpoint(
        cls,
        path: str | os.PathLike,
        env: GymEnv | str | None = None,
        device: torch.device | str = "auto",
        **kwargs: Any,
    ) -> CTMPPO:
        """A ready model from one of the authors' checkpoint files, to evaluate, visualise or fine-tune.

        :param path: a ``.pt`` checkpoint of the authors' ``tasks/rl`` code.
        :param env: the env to use; ``None`` takes the spaces from the checkpoint's ``args.env_id``.
        :param device: torch device.
        :param kwargs: further ``CTMPPO`` arguments (e.g. for fine-tuning).
        :return: the model; ``model.official_args`` holds the checkpoint's training arguments.
        """
        checkpoint = read_checkpoint(path)
        args = checkpoint_args(checkpoint)
        policy_kwargs = policy_kwargs_from_args(args)
        if env is None:
            model = cls("CTMPolicy", None, device=device, policy_kwargs=policy_kwargs, _init_setup_model=False,
                        **kwargs)
            model.observation_space, model.action_space = official_spaces(args)
            model.n_envs = 1
            model._setup_model()
        else:
            model = cls("CTMPolicy", env, device=device, policy_kwargs=policy_kwargs, **kwargs)
        load_reference_weights(model.policy, checkpoint["model_state_dict"])
        model._last_ctm_state = model._initial_ctm_state(model.n_envs)
        model.official_args = args
        model.num_timesteps = int(checkpoint.get("global_step", 0))
        return model


def official_spaces(args: dict[str, Any]) -> tuple[spaces.Space, spaces.Space]:
    """Observation and action spaces of the env a reference checkpoint was trained on.

    Only the spaces are needed here; velocity masking and step limits (which the full env of
    ``agents.official_env`` applies) change neither.
    """
    env_id = args.get("env_id")
    if not env_id:
        raise ValueError("the checkpoint names no env_id: pass an env")
    if "MiniGrid" in env_id:
        import minigrid  # noqa: F401  (registers the MiniGrid ids)
        from minigrid.wrappers import ImgObsWrapper

        env = ImgObsWrapper(gym.make(env_id))
    else:
        env = gym.make(env_id)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()
