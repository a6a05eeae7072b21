"""CTMPolicy: the Continuous Thought Machine as a recurrent Stable-Baselines3 actor-critic policy.

The API mirrors sb3-contrib's ``RecurrentActorCriticPolicy`` (``forward``, ``get_distribution``,
``predict_values``, ``evaluate_actions``, ``predict``) with the CTM's two histories as the recurrent state:

    backbone (features extractor) -> CTM core (replaces the LSTM) -> synchronisation
    -> mlp_extractor (64-64 ReLU heads) -> action_net / value_net
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import MlpExtractor
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from ctm_rl.backbones import CTMBackbone, has_symbolic_grid
from ctm_rl.ctm import ContinuousThoughtMachine, CTMRecording, CTMState


class SyncExtractor(nn.Module):
    """The heads' shared input: the synchronisation vector, optionally layer-normalised, then SB3's
    ``MlpExtractor`` (separate actor and critic MLPs).

    Why normalise: at initialisation post-activations are ~0.01-0.1, so their pairwise products vary across
    observations by ~1e-3 and the heads start out blind to the input; the reference compensates with
    millions of steps.  A LayerNorm restores unit scale (``sync_norm=False`` reproduces the reference).
    """

    def __init__(self, synch_size: int, net_arch, activation_fn: type[nn.Module], sync_norm: bool, device):
        super().__init__()
        self.norm = nn.LayerNorm(synch_size) if sync_norm else nn.Identity()
        self.mlp = MlpExtractor(synch_size, net_arch=net_arch, activation_fn=activation_fn, device=device)
        self.latent_dim_pi = self.mlp.latent_dim_pi
        self.latent_dim_vf = self.mlp.latent_dim_vf

    def forward(self, sync: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mlp(self.norm(sync))

    def forward_actor(self, sync: torch.Tensor) -> torch.Tensor:
        return self.mlp.forward_actor(self.norm(sync))

    def forward_critic(self, sync: torch.Tensor) -> torch.Tensor:
        return self.mlp.forward_critic(self.norm(sync))


class CTMPolicy(ActorCriticPolicy):
    """Actor-critic policy whose recurrent core is a Continuous Thought Machine.

    :param observation_space: observation space.
    :param action_space: action space (Discrete, MultiDiscrete, MultiBinary or Box).
    :param lr_schedule: learning-rate schedule.
    :param net_arch: actor/critic heads on the synchronisation vector; default the reference's 64-64.
    :param activation_fn: activation of the heads; default ReLU, as in the reference.
    :param d_model: number of CTM neurons ``D``.
    :param d_input: width of the backbone's projection (per cell for MiniGrid grids).
    :param iterations: internal ticks ``K`` per environment step.
    :param memory_length: history length ``M``.
    :param memory_hidden_dims: hidden width of the deep neuron-level models.
    :param deep_nlms: deep (True) or shallow neuron-level models.
    :param synapse_depth: 1 (two GLU blocks) or a U-Net of that depth.
    :param n_synch_out: neurons whose pairwise synchronisation the heads read.
    :param neuron_select_type: ``first-last``, ``random`` or ``random-pairing``.
    :param continuous_state_trace: carry the histories across env steps (False: restart every step).
    :param dropout: dropout in synapses and neuron-level models.
    :param backbone: ``classic``, ``minigrid``, ``cnn`` or ``dict``; ``None`` picks one from the space.
    :param do_layernorm_nlm: the reference's ``do_normalisation`` option (off by default).
    :param fused_backward: train with the CTM's hand-written backward pass where it applies (see
        :class:`~ctm_rl.ctm.ContinuousThoughtMachine`); False uses autograd.
    :param sync_norm: layer-normalise the synchronisation vector before the heads (learns much faster
        from scratch; ``False`` is the reference's architecture, used for the authors' checkpoints).
    :param ortho_init: orthogonal initialisation of the heads with gain 1 (the reference's).
    """

    default_backbone: str | None = None

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        d_model: int = 128,
        d_input: int = 64,
        iterations: int = 1,
        memory_length: int = 5,
        memory_hidden_dims: int = 2,
        deep_nlms: bool = True,
        synapse_depth: int = 1,
        n_synch_out: int = 16,
        neuron_select_type: str = "first-last",
        continuous_state_trace: bool = True,
        dropout: float = 0.0,
        backbone: str | None = None,
        do_layernorm_nlm: bool = False,
        fused_backward: bool = True,
        sync_norm: bool = True,
        ortho_init: bool = True,
        use_sde: bool = False,
        log_std_init: float = 0.0,
        full_std: bool = True,
        use_expln: bool = False,
        squash_output: bool = False,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ):
        # Set before the parent constructor: it calls ``_build_mlp_extractor``, which builds the CTM.
        self.ctm_kwargs = dict(
            d_model=d_model,
            iterations=iterations,
            memory_length=memory_length,
            memory_hidden_dims=memory_hidden_dims,
            deep_nlms=deep_nlms,
            synapse_depth=synapse_depth,
            n_synch_out=n_synch_out,
            neuron_select_type=neuron_select_type,
            continuous_state_trace=continuous_state_trace,
            dropout=dropout,
            do_layernorm_nlm=do_layernorm_nlm,
            fused_backward=fused_backward,
        )
        self.d_input = d_input
        self.backbone = backbone or self.default_backbone
        self.sync_norm = sync_norm
        self.ortho_init_heads = ortho_init
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch if net_arch is not None else dict(pi=[64, 64], vf=[64, 64]),
            activation_fn=activation_fn,
            ortho_init=False,  # SB3's gains (sqrt 2, 0.01) differ from the reference's: see ``_build``
            use_sde=use_sde,
            log_std_init=log_std_init,
            full_std=full_std,
            use_expln=use_expln,
            squash_output=squash_output,
            features_extractor_class=CTMBackbone,
            features_extractor_kwargs=dict(d_input=d_input, backbone=self.backbone),
            share_features_extractor=True,
            # MiniGrid index grids look like uint8 images to SB3 but must reach the embeddings unscaled.
            normalize_images=not has_symbolic_grid(observation_space),
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )

    # --- construction ------------------------------------------------------------------------------------

    def _build_mlp_extractor(self) -> None:
        self.ctm = ContinuousThoughtMachine(self.features_dim, **self.ctm_kwargs)
        self.mlp_extractor = SyncExtractor(
            self.ctm.synch_size, self.net_arch, self.activation_fn, self.sync_norm, self.device
        )

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        if self.ortho_init_heads:
            # The reference initialises actor and critic orthogonally with gain 1 and zero biases.
            for module in (self.mlp_extractor, self.action_net, self.value_net):
                module.apply(partial(self.init_weights, gain=1.0))

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        for name in ("features_extractor_class", "features_extractor_kwargs", "share_features_extractor",
                     "normalize_images"):
            data.pop(name, None)
        data.update(self.ctm_kwargs, d_input=self.d_input, backbone=self.backbone, sync_norm=self.sync_norm,
                    ortho_init=self.ortho_init_heads)
        return data

    # --- recurrent state ---------------------------------------------------------------------------------

    @property
    def state_shape(self) -> tuple[int, int]:
        """Shape ``(D, M)`` of each of the two histories of one env."""
        return (self.ctm.d_model, self.ctm.memory_length)

    def initial_state(self, n_envs: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """The learned start traces for ``n_envs`` envs, as ``predict`` takes and returns them."""
        state = self.ctm.initial_state(n_envs)
        return state.pre.detach().cpu().numpy().copy(), state.post.detach().cpu().numpy().copy()

    # --- the recurrent API -------------------------------------------------------------------------------

    def _feature_term(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """``W_f f``: the backbone features' share of the CTM's first synapse layer (see :mod:`ctm_rl.ctm`),
        computed by the backbone straight from the observations unless dropout must see the features."""
        if self.ctm.drops_features:
            return self.ctm.feature_term(self.extract_features(obs))
        observations = preprocess_obs(obs, self.observation_space, normalize_images=self.normalize_images)
        return self.features_extractor.project(observations, self.ctm.feature_weight)

    def _synchronise(
        self, obs: torch.Tensor, state: CTMState, episode_starts: torch.Tensor, record: bool = False
    ) -> tuple:
        """One env step of backbone + CTM: ``(sync, new_state[, recording])``."""
        return self.ctm(self._feature_term(obs), CTMState(*state), episode_starts, record=record)

    def _heads(self, sync: torch.Tensor) -> tuple[Distribution, torch.Tensor]:
        latent_pi, latent_vf = self.mlp_extractor(sync)
        return self._get_action_dist_from_latent(latent_pi), self.value_net(latent_vf)

    def forward(
        self,
        obs: torch.Tensor,
        state: CTMState,
        episode_starts: torch.Tensor,
        deterministic: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, CTMState]:
        """One env step: actions, values, log-probabilities and the new state."""
        sync, state = self._synchronise(obs, state, episode_starts)
        distribution, values = self._heads(sync)
        actions = distribution.get_actions(deterministic=deterministic)
        return actions, values, distribution.log_prob(actions), state

    def get_distribution(
        self, obs: torch.Tensor, state: CTMState, episode_starts: torch.Tensor
    ) -> tuple[Distribution, CTMState]:
        """The action distribution for one env step, and the new state."""
        sync, state = self._synchronise(obs, state, episode_starts)
        latent_pi = self.mlp_extractor.forward_actor(sync)
        return self._get_action_dist_from_latent(latent_pi), state

    def predict_values(self, obs: torch.Tensor, state: CTMState, episode_starts: torch.Tensor) -> torch.Tensor:
        """Values of one env step's observations."""
        sync, _ = self._synchronise(obs, state, episode_starts)
        return self.value_net(self.mlp_extractor.forward_critic(sync))

    def record_step(
        self, obs: torch.Tensor, state: CTMState, episode_starts: torch.Tensor
    ) -> tuple[Distribution, torch.Tensor, CTMState, CTMRecording]:
        """One env step with per-tick activity recorded: distribution, values, new state, recording."""
        sync, state, recording = self._synchronise(obs, state, episode_starts, record=True)
        distribution, values = self._heads(sync)
        return distribution, values, state, recording

    def evaluate_actions(
        self,
        obs: torch.Tensor | dict[str, torch.Tensor],
        actions: torch.Tensor,
        state: CTMState,
        episode_starts: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Re-run the policy over sequences and evaluate ``actions``.

        :param obs: ``(T * N, ...)`` observations, time-major: row ``t * N + n`` is step t of sequence n.
        :param actions: ``(T * N, ...)`` actions, same order.
        :param state: the state before step 0 of each of the ``N`` sequences, ``(N, D, M)`` each.
        :param episode_starts: ``(T * N,)``; the state of a sequence is reset where it is set.
        :return: values ``(T * N, 1)``, log-probabilities and entropies ``(T * N,)``.
        """
        n_seq = state[0].shape[0]
        feature_term = self._feature_term(obs)
        sync, _ = self.ctm.forward_sequence(
            feature_term.view(-1, n_seq, feature_term.shape[-1]), CTMState(*state), episode_starts.view(-1, n_seq)
        )
        distribution, values = self._heads(sync.flatten(0, 1))
        return values, distribution.log_prob(actions), distribution.entropy()

    def _predict(
        self,
        observation: torch.Tensor,
        state: CTMState,
        episode_starts: torch.Tensor,
        deterministic: bool = False,
    ) -> tuple[torch.Tensor, CTMState]:
        distribution, state = self.get_distribution(observation, state, episode_starts)
        return distribution.get_actions(deterministic=deterministic), state

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """Actions and the next state for an observation, exactly like ``RecurrentPPO``'s ``predict``.

        :param observation: one observation or a batch (one per env).
        :param state: the state returned by the previous call; ``None`` starts from the start traces.
        :param episode_start: ``(n_envs,)``, True where the observation is the first of an episode.
        :param deterministic: the most likely actions instead of samples.
        :return: actions and the new state (a tuple of two numpy arrays ``(n_envs, D, M)``).
        """
        self.set_training_mode(False)
        observation, vectorized_env = self.obs_to_tensor(observation)
        first = observation[next(iter(observation))] if isinstance(observation, dict) else observation
        n_envs = first.shape[0]
        if state is None:
            state = self.initial_state(n_envs)
        if episode_start is None:
            episode_start = np.zeros(n_envs, dtype=bool)
        with torch.no_grad():
            ctm_state = CTMState(*(torch.as_tensor(np.asarray(s), dtype=torch.float32, device=self.device)
                                   for s in state))
            starts = torch.as_tensor(np.asarray(episode_start), dtype=torch.float32, device=self.device).view(-1)
            actions, ctm_state = self._predict(observation, ctm_state, starts, deterministic=deterministic)
        new_state = (ctm_state.pre.cpu().numpy(), ctm_state.post.cpu().numpy())
        actions = actions.cpu().numpy().reshape((-1, *self.action_space.shape))
        if isinstance(self.action_space, spaces.Box):
            if self.squash_output:
                actions = self.unscale_action(actions)
            else:
                actions = np.clip(actions, self.action_space.low, self.action_space.high)
        if not vectorized_env:
            actions = actions.squeeze(axis=0)
        return actions, new_state


class CnnCTMPolicy(CTMPolicy):
    """CTM policy for pixel observations (SB3's NatureCNN backbone)."""

    default_backbone = "cnn"


class MultiInputCTMPolicy(CTMPolicy):
    """CTM policy for Dict observations (one backbone per key, features concatenated)."""

    default_backbone = "dict"
