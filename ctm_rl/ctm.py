"""The Continuous Thought Machine core, in the form the paper's RL agent computes it.

Notation (Darlow et al., 2025): ``D`` neurons (``d_model``), ``M`` history length (``memory_length``),
``K`` internal ticks per environment step (``iterations``), ``B`` parallel environments.

The recurrent state of one environment is two histories, each ``(D, M)``, oldest first:

* ``pre``  -- the last M pre-activations ``a`` of every neuron,
* ``post`` -- the last M post-activations ``z`` of every neuron.

One environment step, given backbone features ``f`` of the observation:

    for k in 1..K:                                   (internal ticks)
        a    = synapses(concat(f, post[:, -1]))      (mixes information across neurons)
        pre  = shift_left(pre, a)
        z    = NLM(pre)                              (private neuron-level models)
        post = shift_left(post, z)
    sync_ij = sum_m w_ij,m post_i,m post_j,m / sqrt(sum_m w_ij,m),  w_ij,m = exp(-r_ij (M-1-m))

The synchronisation vector ``sync`` is the representation the actor and critic read.  The histories are
carried from one env step to the next and replaced by the learned start traces at episode starts.

The synapses' first layer is linear in ``concat(f, z)``: ``W_f f + W_z z + b``.  The features' share, the
*feature term* ``W_f f``, is the same for every tick of an env step, so it is computed once per env step
(:meth:`ContinuousThoughtMachine.feature_term`, or by the backbone straight from the observation, see
:mod:`ctm_rl.backbones`), and the model's methods take it in place of ``f``.

This module is plain PyTorch: it knows nothing of Stable-Baselines3.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ctm_rl.fused import fused_forward_sequence, fused_parameters

NEURON_SELECT_TYPES = ("first-last", "random", "random-pairing")


class CTMState(NamedTuple):
    """The recurrent state: pre- and post-activation histories, each ``(B, D, M)``, oldest first.

    The model computes with histories laid out ``(D, M, B)`` -- neuron, history slot, env -- so that the
    neuron-level models are one batched matmul over neurons on ``(M, B)`` matrices with the batch innermost
    (several times faster on CPU than ``(B, M)``); the ``(B, D, M)`` tensors here are permuted views of
    those, so handing the state from one env step to the next costs nothing.
    """

    pre: torch.Tensor
    post: torch.Tensor


class CTMRecording(NamedTuple):
    """Per-tick activity of one env step, for visualisation: ``(B, K, D)``, ``(B, K, D)``, ``(B, K, S)``."""

    pre: torch.Tensor
    post: torch.Tensor
    sync: torch.Tensor


def glu_block(in_dim: int, out_dim: int) -> list[nn.Module]:
    """``Linear(in, 2*out) -> GLU -> LayerNorm(out)``: the building block of the reference's MLPs."""
    return [nn.Linear(in_dim, 2 * out_dim), nn.GLU(), nn.LayerNorm(out_dim)]


class SynapseUNet(nn.Module):
    """Deep synapse model (``synapse_depth > 1``): the reference's U-Net over neuron widths.

    Widths fall linearly from ``d_model`` to ``min_width`` over ``depth`` levels; each level down and up
    is ``Dropout -> Linear -> LayerNorm -> SiLU``, and skip connections are added and re-normalised on the
    way up.  The structure (and so the parameter names) follows the authors' code so their checkpoints load.
    """

    def __init__(self, in_dim: int, d_model: int, depth: int, dropout: float = 0.0, min_width: int = 16):
        super().__init__()
        widths = [int(w) for w in np.linspace(d_model, min_width, depth)]
        self.first_projection = nn.Sequential(nn.Linear(in_dim, widths[0]), nn.LayerNorm(widths[0]), nn.SiLU())

        def level(w_in: int, w_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Dropout(dropout), nn.Linear(w_in, w_out), nn.LayerNorm(w_out), nn.SiLU())

        self.down_projections = nn.ModuleList(level(widths[i], widths[i + 1]) for i in range(depth - 1))
        self.up_projections = nn.ModuleList(level(widths[i + 1], widths[i]) for i in range(depth - 1))
        self.skip_lns = nn.ModuleList(nn.LayerNorm(widths[i]) for i in range(depth - 1))

    input_dropout = nn.Identity()  # the U-Net drops out inside its levels only

    @property
    def input_layer(self) -> nn.Linear:
        return self.first_projection[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from_input_layer(self.input_layer(x))

    def forward_from_input_layer(self, h: torch.Tensor) -> torch.Tensor:
        """The rest of the model, from the first layer's output ``h``."""
        downs = [self.first_projection[1:](h)]
        for down in self.down_projections:
            downs.append(down(downs[-1]))
        out = downs[-1]
        for level in reversed(range(len(self.up_projections))):
            out = self.skip_lns[level](self.up_projections[level](out) + downs[level])
        return out


class SynapseGLU(nn.Sequential):
    """Synapse model of depth 1, the reference RL agent's: ``Dropout``, then two ``Linear -> GLU -> LayerNorm``
    blocks (an ``nn.Sequential``, so the parameter names are the authors')."""

    def __init__(self, in_dim: int, d_model: int, dropout: float = 0.0):
        super().__init__(nn.Dropout(dropout), *glu_block(in_dim, d_model), *glu_block(d_model, d_model))

    @property
    def input_dropout(self) -> nn.Module:
        return self[0]

    @property
    def input_layer(self) -> nn.Linear:
        return self[1]

    def forward_from_input_layer(self, h: torch.Tensor) -> torch.Tensor:
        """The rest of the model, from the first layer's output ``h``."""
        for layer in list(self)[2:]:
            h = layer(h)
        return h


def build_synapses(in_dim: int, d_model: int, depth: int, dropout: float) -> nn.Module:
    """Synapse model: depth 1 is the reference RL agent's two GLU blocks; deeper is a U-Net.

    Both expose ``input_dropout`` and ``input_layer`` (the first ``Linear``, over ``concat(f, z)``) and
    ``forward_from_input_layer``, which is the model given that layer's output.
    """
    if depth == 1:
        return SynapseGLU(in_dim, d_model, dropout)
    return SynapseUNet(in_dim, d_model, depth, dropout)


class NeuronLinear(nn.Module):
    """``D`` private linear maps, one per neuron, applied in a single batched contraction.

    Input ``(D, in_dim, B)`` -> output ``(D, out_dim, B)``; neuron ``d`` uses only ``weight[d]``
    (``(in_dim, out_dim)``, the reference's layout) and ``bias[d]``.  The output is divided by a learnable
    scalar temperature, as in the paper.
    """

    def __init__(self, d_model: int, in_dim: int, out_dim: int, dropout: float = 0.0, layernorm: bool = False):
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim + out_dim)
        self.weight = nn.Parameter(torch.empty(d_model, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(d_model, out_dim))
        self.temperature = nn.Parameter(torch.ones(1))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # The reference's optional per-neuron normalisation of the history (``do_normalisation``).
        self.norm = nn.LayerNorm(in_dim) if layernorm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x)
        if not isinstance(self.norm, nn.Identity):
            x = self.norm(x.transpose(1, 2)).transpose(1, 2)  # normalise each env's history
        return torch.baddbmm(self.bias.unsqueeze(-1), self.weight.transpose(1, 2), x) / self.temperature


class NeuronLevelModels(nn.Module):
    """Private neuron-level models: each neuron maps its own pre-activation history (length M) to one value.

    Deep: ``M -> 2H -> GLU -> H -> 2 -> GLU``; shallow: ``M -> 2 -> GLU`` (per neuron).
    """

    def __init__(
        self,
        d_model: int,
        memory_length: int,
        memory_hidden_dims: int,
        deep: bool = True,
        dropout: float = 0.0,
        layernorm: bool = False,
    ):
        super().__init__()
        if deep:
            layers = [
                NeuronLinear(d_model, memory_length, 2 * memory_hidden_dims, dropout, layernorm),
                nn.GLU(dim=1),
                NeuronLinear(d_model, memory_hidden_dims, 2, dropout, layernorm),
                nn.GLU(dim=1),
            ]
        else:
            layers = [NeuronLinear(d_model, memory_length, 2, dropout, layernorm), nn.GLU(dim=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, pre_history: torch.Tensor) -> torch.Tensor:
        """``(D, M, B)`` pre-activation histories -> ``(D, B)`` post-activations."""
        return self.layers(pre_history).squeeze(1)


def select_neuron_pairs(
    d_model: int, n_synch: int, select_type: str, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which neuron pairs ``(i, j)`` are synchronised, as two index vectors of equal length.

    * ``first-last``: the reference RL agent's choice -- the *last* ``n_synch`` neurons, every pair
      ``i <= j`` (upper triangle, row-major), ``n(n+1)/2`` pairs.
    * ``random``: ``n_synch`` random "left" and ``n_synch`` random "right" neurons, upper triangle of their
      cross product, ``n(n+1)/2`` pairs.
    * ``random-pairing``: ``n_synch`` random (left, right) pairs, ``n`` pairs.
    """
    if select_type == "first-last":
        left = right = torch.arange(d_model - n_synch, d_model)
    elif select_type in ("random", "random-pairing"):
        left = torch.randperm(d_model, generator=generator)[:n_synch]
        right = torch.randperm(d_model, generator=generator)[:n_synch]
    else:
        raise ValueError(f"neuron_select_type must be one of {NEURON_SELECT_TYPES}, got {select_type!r}")
    if select_type == "random-pairing":
        return left, right
    i, j = torch.triu_indices(n_synch, n_synch)
    return left[i], right[j]


class ContinuousThoughtMachine(nn.Module):
    """The CTM recurrent core: synapses, neuron-level models, histories and output synchronisation.

    :param feature_dim: size of the (flattened) backbone features ``f`` fed to the synapses every tick.
    :param d_model: number of neurons ``D``.
    :param iterations: internal ticks ``K`` per environment step.
    :param memory_length: history length ``M`` of every neuron.
    :param memory_hidden_dims: hidden width ``H`` of the deep neuron-level models.
    :param deep_nlms: deep (two-layer) or shallow (one-layer) neuron-level models.
    :param synapse_depth: 1 for the reference's two GLU blocks, > 1 for a U-Net.
    :param n_synch_out: number of neurons whose pairwise synchronisation forms the output.
    :param neuron_select_type: ``first-last``, ``random`` or ``random-pairing``.
    :param dropout: dropout in the synapses and neuron-level models.
    :param continuous_state_trace: carry histories across env steps (True) or restart them every step.
    :param do_layernorm_nlm: the reference's ``do_normalisation`` (LayerNorm of each history), off by default.
    :param fused_backward: train sequences (:meth:`forward_sequence` with gradients) with the hand-written
        backward pass of :mod:`ctm_rl.fused` where the architecture allows it (depth-1 synapses, no active
        dropout, no NLM LayerNorm, continuous trace); False always uses autograd.  Same results, much faster.
    """

    def __init__(
        self,
        feature_dim: int,
        d_model: int = 128,
        iterations: int = 1,
        memory_length: int = 5,
        memory_hidden_dims: int = 2,
        deep_nlms: bool = True,
        synapse_depth: int = 1,
        n_synch_out: int = 16,
        neuron_select_type: str = "first-last",
        dropout: float = 0.0,
        continuous_state_trace: bool = True,
        do_layernorm_nlm: bool = False,
        fused_backward: bool = True,
    ):
        super().__init__()
        _check_config(d_model, iterations, memory_length, memory_hidden_dims, synapse_depth, n_synch_out,
                      neuron_select_type, dropout)
        self.feature_dim = feature_dim
        self.d_model = d_model
        self.iterations = iterations
        self.memory_length = memory_length
        self.n_synch_out = n_synch_out
        self.neuron_select_type = neuron_select_type
        self.continuous_state_trace = continuous_state_trace
        self.fused_backward = fused_backward

        self.synapses = build_synapses(feature_dim + d_model, d_model, synapse_depth, dropout)
        self.nlm = NeuronLevelModels(d_model, memory_length, memory_hidden_dims, deep_nlms, dropout,
                                     do_layernorm_nlm)

        bound = math.sqrt(1.0 / (d_model + memory_length))
        self.start_trace = nn.Parameter(torch.empty(d_model, memory_length).uniform_(-bound, bound))
        self.start_activated_trace = nn.Parameter(torch.empty(d_model, memory_length).uniform_(-bound, bound))

        left, right = select_neuron_pairs(d_model, n_synch_out, neuron_select_type)
        self.register_buffer("synch_left", left)
        self.register_buffer("synch_right", right)
        self.decay_params_out = nn.Parameter(torch.zeros(len(left)))
        # Age of each history slot, newest (index M-1) has age 0.
        self.register_buffer("ages", torch.arange(memory_length - 1, -1, -1, dtype=torch.float32),
                             persistent=False)

    @property
    def synch_size(self) -> int:
        """Length ``S`` of the synchronisation vector."""
        return self.decay_params_out.numel()

    # --- state -------------------------------------------------------------------------------------------

    def initial_state(self, batch_size: int) -> CTMState:
        """The learned start traces, repeated for ``batch_size`` environments."""
        return CTMState(
            self.start_trace.unsqueeze(0).expand(batch_size, -1, -1),
            self.start_activated_trace.unsqueeze(0).expand(batch_size, -1, -1),
        )

    def _reset(self, pre: torch.Tensor, post: torch.Tensor, episode_starts: torch.Tensor):
        """Start traces where ``episode_starts`` is set, on ``(D, M, B)`` histories."""
        mask = episode_starts.to(torch.bool).view(1, 1, -1)
        return (torch.where(mask, self.start_trace.unsqueeze(-1), pre),
                torch.where(mask, self.start_activated_trace.unsqueeze(-1), post))

    def _synchronisation(self, post: torch.Tensor) -> torch.Tensor:
        """Output synchronisation ``(B, S)`` over the post-activation window ``post`` ``(D, M, B)``."""
        decay = torch.exp(-self.decay_params_out.clamp(0.0, 4.0).unsqueeze(-1) * self.ages)  # (S, M)
        products = post.index_select(0, self.synch_left) * post.index_select(0, self.synch_right)  # (S, M, B)
        weighted = torch.bmm(decay.unsqueeze(1), products).squeeze(1)  # sum over M: (S, B)
        return (weighted / decay.sum(-1, keepdim=True).sqrt()).t()

    def synchronisation(self, post: torch.Tensor) -> torch.Tensor:
        """Output synchronisation ``(B, S)`` over a ``(B, D, M)`` post-activation window."""
        return self._synchronisation(post.permute(1, 2, 0))

    # --- the feature term ------------------------------------------------------------------------------

    @property
    def feature_weight(self) -> torch.Tensor:
        """``W_f``, the columns of the synapses' first layer that read the features: ``(H, feature_dim)``."""
        return self.synapses.input_layer.weight[:, :self.feature_dim]

    @property
    def drops_features(self) -> bool:
        """Whether dropout applies to the features now (training with input dropout): the feature term must
        then be computed from the features themselves, by :meth:`feature_term`."""
        return self.training and isinstance(self.synapses.input_dropout, nn.Dropout) and self.synapses.input_dropout.p > 0

    def feature_term(self, features: torch.Tensor) -> torch.Tensor:
        """``W_f f``: the features' share of the first synapse layer, ``(..., H)`` from ``(..., feature_dim)``.

        With input dropout, one dropout mask falls on the features for all ticks of an env step.
        """
        return torch.nn.functional.linear(self.synapses.input_dropout(features), self.feature_weight)

    # --- the computation (histories laid out (D, M, B)) ---------------------------------------------------

    def _tick(self, feature_term: torch.Tensor, pre: torch.Tensor, post: torch.Tensor):
        """One internal tick: synapses, pre-activation history, neuron-level models, post-activation history."""
        synapses = self.synapses
        layer = synapses.input_layer
        # W_f f + b + W_z z, with z the newest post-activations.
        h = torch.addmm(feature_term + layer.bias, synapses.input_dropout(post[:, -1].t()),
                        layer.weight[:, self.feature_dim:].t())
        pre_activation = synapses.forward_from_input_layer(h)  # (B, D)
        pre = torch.cat((pre[:, 1:], pre_activation.t().unsqueeze(1)), dim=1)
        post = torch.cat((post[:, 1:], self.nlm(pre).unsqueeze(1)), dim=1)
        return pre, post

    def _step(self, feature_term, pre, post, starts: torch.Tensor | None, record: bool):
        """One env step on ``(D, M, B)`` histories; ``starts`` is None when no env starts an episode."""
        if not self.continuous_state_trace:  # the ablation: every env step thinks from the start traces
            batch = feature_term.shape[0]
            pre = self.start_trace.unsqueeze(-1).expand(-1, -1, batch)
            post = self.start_activated_trace.unsqueeze(-1).expand(-1, -1, batch)
        elif starts is not None:
            pre, post = self._reset(pre, post, starts)
        ticks = []
        for _ in range(self.iterations):
            pre, post = self._tick(feature_term, pre, post)
            if record:
                ticks.append((pre[:, -1].t(), post[:, -1].t(), self._synchronisation(post)))
        # When recording, the last tick's synchronisation is the step's output: don't compute it twice.
        sync = ticks[-1][2] if record else self._synchronisation(post)
        return sync, pre, post, ticks

    def forward(
        self,
        feature_term: torch.Tensor,
        state: CTMState,
        episode_starts: torch.Tensor | None = None,
        record: bool = False,
    ) -> tuple[torch.Tensor, CTMState] | tuple[torch.Tensor, CTMState, CTMRecording]:
        """One environment step for a batch of envs.

        :param feature_term: ``W_f f`` of the backbone features ``f`` (:meth:`feature_term`), ``(B, H)``.
        :param state: histories carried from the previous env step.
        :param episode_starts: ``(B,)``, 1 where the observation is the first of an episode.
        :param record: also return per-tick pre/post-activations and synchronisation.
        :return: synchronisation ``(B, S)``, the new state (and a :class:`CTMRecording` when ``record``).
        """
        starts = episode_starts if episode_starts is not None and bool(episode_starts.any()) else None
        sync, pre, post, ticks = self._step(
            feature_term, state.pre.permute(1, 2, 0), state.post.permute(1, 2, 0), starts, record
        )
        state = CTMState(pre.permute(2, 0, 1), post.permute(2, 0, 1))
        if not record:
            return sync, state
        pre_ticks, post_ticks, sync_ticks = (torch.stack(x, dim=1) for x in zip(*ticks))
        return sync, state, CTMRecording(pre_ticks, post_ticks, sync_ticks)

    def forward_sequence(
        self, feature_term: torch.Tensor, state: CTMState, episode_starts: torch.Tensor
    ) -> tuple[torch.Tensor, CTMState]:
        """Run ``T`` env steps: feature terms ``(T, B, H)`` (:meth:`feature_term`), episode starts ``(T, B)``
        -> sync ``(T, B, S)``."""
        fused = fused_parameters(self) if self.fused_backward and torch.is_grad_enabled() else None
        if fused is not None:  # the same computation with a hand-written backward pass: much faster to train
            sync, pre, post = fused_forward_sequence(*fused, feature_term, *state, episode_starts)
            return sync, CTMState(pre, post)
        pre, post = state.pre.permute(1, 2, 0), state.post.permute(1, 2, 0)
        # One host sync for the whole sequence instead of one per step: which steps need a reset?
        any_start = episode_starts.any(dim=1).tolist()
        syncs = []
        for term_t, starts_t, reset in zip(feature_term, episode_starts, any_start):
            sync, pre, post, _ = self._step(term_t, pre, post, starts_t if reset else None, record=False)
            syncs.append(sync)
        return torch.stack(syncs), CTMState(pre.permute(2, 0, 1), post.permute(2, 0, 1))


def _check_config(d_model, iterations, memory_length, memory_hidden_dims, synapse_depth, n_synch_out,
                  neuron_select_type, dropout) -> None:
    """Reject configurations the model cannot build, with one clear message each."""
    for name, value in (("d_model", d_model), ("iterations", iterations), ("memory_length", memory_length),
                        ("memory_hidden_dims", memory_hidden_dims), ("synapse_depth", synapse_depth),
                        ("n_synch_out", n_synch_out)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if neuron_select_type not in NEURON_SELECT_TYPES:
        raise ValueError(f"neuron_select_type must be one of {NEURON_SELECT_TYPES}, got {neuron_select_type!r}")
    if n_synch_out > d_model:
        raise ValueError(f"n_synch_out ({n_synch_out}) cannot exceed d_model ({d_model})")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
