"""What the policy heads make of every internal tick: action probabilities, certainty and value.

The CTM's actor and critic only read the synchronisation after the last tick, but the heads can read the
synchronisation of *any* tick: that shows how the decision forms while the CTM thinks.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    Distribution,
    MultiCategoricalDistribution,
)

from ctm_rl.policy import CTMPolicy

# Action kinds, stored in a recording's metadata (they decide how the action panel reads).
DISCRETE, MULTI_DISCRETE, MULTI_BINARY, CONTINUOUS = "discrete", "multi-discrete", "multi-binary", "continuous"


class TickOutputs(NamedTuple):
    """Head outputs for ``N`` synchronisation vectors: ``(N, A)``, ``(N,)``, ``(N,)``."""

    action_probs: torch.Tensor
    certainty: torch.Tensor
    values: torch.Tensor


def action_kind(distribution: Distribution) -> str:
    """Which of the four supported kinds of action distribution this is."""
    if isinstance(distribution, CategoricalDistribution):
        return DISCRETE
    if isinstance(distribution, MultiCategoricalDistribution):
        return MULTI_DISCRETE
    if isinstance(distribution, BernoulliDistribution):
        return MULTI_BINARY
    return CONTINUOUS


def tick_outputs(policy: CTMPolicy, sync: torch.Tensor) -> TickOutputs:
    """Run actor and critic heads on per-tick synchronisation vectors ``(N, S)``."""
    latent_pi, latent_vf = policy.mlp_extractor(sync)
    distribution = policy._get_action_dist_from_latent(latent_pi)
    probs, certainty = summarise_distribution(distribution)
    return TickOutputs(probs, certainty, policy.value_net(latent_vf).squeeze(-1))


def summarise_distribution(distribution: Distribution) -> tuple[torch.Tensor, torch.Tensor]:
    """Action probabilities ``(N, A)`` and certainty ``(N,)`` of a batch of SB3 action distributions.

    Certainty is ``1 - H / H_max``, the entropy normalised by its maximum (the paper's definition):
    1 for a one-hot choice, 0 for a uniform one.

    * Discrete: the action probabilities; ``H_max = log n``.
    * MultiDiscrete: every component's probabilities, concatenated; certainty is the mean over components.
    * MultiBinary: the probability of each bit being 1; certainty is the mean over bits (``H_max = log 2``).
    * Box (Gaussian): a density has no maximum entropy, so certainty is NaN; the "probabilities" are the
      distribution's mode (its mean action), so the panel shows what the policy would do at that tick.
    """
    kind = action_kind(distribution)
    if kind == DISCRETE:
        probs = distribution.distribution.probs
        return probs, 1.0 - _normalised_entropy(probs)
    if kind == MULTI_DISCRETE:
        parts = [d.probs for d in distribution.distribution]
        certainty = torch.stack([1.0 - _normalised_entropy(p) for p in parts], dim=-1).mean(-1)
        return torch.cat(parts, dim=-1), certainty
    if kind == MULTI_BINARY:
        p1 = distribution.distribution.probs
        bit_entropy = torch.special.entr(p1) + torch.special.entr(1.0 - p1)
        return p1, 1.0 - (bit_entropy / math.log(2.0)).mean(-1)
    mode = distribution.mode()
    return mode.reshape(mode.shape[0], -1), torch.full(mode.shape[:1], float("nan"), device=mode.device)


def _normalised_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy over the last axis divided by ``log n`` (0 for a single action, which is always certain)."""
    n = probs.shape[-1]
    if n < 2:
        return torch.zeros(probs.shape[:-1], device=probs.device)
    return torch.special.entr(probs).sum(-1) / math.log(n)
