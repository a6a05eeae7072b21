"""Backbones: observation -> flat feature vector ``f`` fed to the CTM's synapses every internal tick.

Each backbone is a Stable-Baselines3 ``BaseFeaturesExtractor``, so it plugs into SB3 policies unchanged.
The classic-control and MiniGrid backbones are the reference RL agent's; pixels use SB3's NatureCNN.
"""

from __future__ import annotations

import gymnasium as gym
import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import get_flattened_obs_dim, is_image_space
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, NatureCNN
from torch import nn

from ctm_rl.ctm import glu_block

BACKBONES = ("classic", "minigrid", "cnn", "dict")

# MiniGrid's symbolic vocabulary: OBJECT_TO_IDX, COLOR_TO_IDX and STATE_TO_IDX sizes.
MINIGRID_OBJECTS, MINIGRID_COLOURS, MINIGRID_STATES = 11, 6, 3
# Images this small are MiniGrid (object, colour, state) index grids, never pixels (NatureCNN needs >= 36).
_MAX_SYMBOLIC_GRID = 35


def is_symbolic_grid(space: gym.Space) -> bool:
    """True for MiniGrid-style ``(H, W, 3)`` integer index grids: embedded, never normalised or transposed."""
    return (
        isinstance(space, spaces.Box)
        and len(space.shape) == 3
        and space.shape[-1] == 3
        and max(space.shape[:2]) <= _MAX_SYMBOLIC_GRID
        and space.dtype.kind != "f"
    )


def has_symbolic_grid(space: gym.Space) -> bool:
    """True if ``space`` is, or (for Dict spaces) contains, a MiniGrid index grid."""
    if isinstance(space, spaces.Dict):
        return any(is_symbolic_grid(s) for s in space.spaces.values())
    return is_symbolic_grid(space)


class ClassicControlBackbone(BaseFeaturesExtractor):
    """The reference's vector backbone: flatten, then two ``Linear -> GLU -> LayerNorm`` blocks."""

    def __init__(self, observation_space: gym.Space, d_input: int = 64):
        super().__init__(observation_space, d_input)
        self.projector = nn.Sequential(
            nn.Flatten(), *glu_block(get_flattened_obs_dim(observation_space), d_input), *glu_block(d_input, d_input)
        )

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.projector(observations)


class MiniGridBackbone(BaseFeaturesExtractor):
    """The reference's MiniGrid backbone over ``(H, W, 3)`` (object, colour, state) index grids.

    Every cell is embedded as ``concat(object, colour, state, position)`` embeddings, projected by two
    ``Linear -> GLU -> LayerNorm`` blocks to ``d_input``, and the cells are flattened row-major:
    ``features_dim = H * W * d_input``.
    """

    def __init__(self, observation_space: gym.Space, d_input: int = 64, embedding_dim: int = 8):
        height, width = observation_space.shape[:2]
        super().__init__(observation_space, height * width * d_input)
        self.object_embedding = nn.Embedding(MINIGRID_OBJECTS, embedding_dim)
        self.color_embedding = nn.Embedding(MINIGRID_COLOURS, embedding_dim)
        self.state_embedding = nn.Embedding(MINIGRID_STATES, embedding_dim)
        self.position_embedding = nn.Embedding(height * width, embedding_dim)
        self.projector = nn.Sequential(*glu_block(4 * embedding_dim, d_input), *glu_block(d_input, d_input))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        grid = observations.long()
        batch, height, width, _ = grid.shape
        positions = torch.arange(height * width, device=grid.device).view(1, height, width).expand(batch, -1, -1)
        cells = torch.cat(
            (
                self.object_embedding(grid[..., 0]),
                self.color_embedding(grid[..., 1]),
                self.state_embedding(grid[..., 2]),
                self.position_embedding(positions),
            ),
            dim=-1,
        )
        return self.projector(cells).flatten(1)


def default_backbone(space: gym.Space) -> str:
    """The backbone a CTM policy uses for ``space`` when none is named."""
    if isinstance(space, spaces.Dict):
        return "dict"
    if is_symbolic_grid(space):
        return "minigrid"
    if is_image_space(space, check_channels=False):
        return "cnn"
    return "classic"


def make_backbone(space: gym.Space, name: str, d_input: int) -> BaseFeaturesExtractor:
    """Build the backbone ``name`` (one of :data:`BACKBONES`) for observations from ``space``."""
    if name == "classic":
        return ClassicControlBackbone(space, d_input)
    if name == "minigrid":
        if not is_symbolic_grid(space):
            raise ValueError(f"the minigrid backbone needs (H, W, 3) integer index grids, got {space}")
        return MiniGridBackbone(space, d_input)
    if name == "cnn":
        if not is_image_space(space, check_channels=False):
            raise ValueError(f"the cnn backbone needs image observations (uint8, 3-D), got {space}")
        return NatureCNN(space, features_dim=d_input)
    if name == "dict":
        if not isinstance(space, spaces.Dict):
            raise ValueError(f"the dict backbone needs Dict observations, got {space}")
        return DictBackbone(space, d_input)
    raise ValueError(f"backbone must be one of {BACKBONES}, got {name!r}")


class DictBackbone(BaseFeaturesExtractor):
    """Dict observations: each key through its own default backbone, features concatenated."""

    def __init__(self, observation_space: spaces.Dict, d_input: int = 64):
        extractors = {
            key: make_backbone(subspace, default_backbone(subspace), d_input)
            for key, subspace in observation_space.spaces.items()
        }
        super().__init__(observation_space, sum(e.features_dim for e in extractors.values()))
        self.extractors = nn.ModuleDict(extractors)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([extractor(observations[key]) for key, extractor in self.extractors.items()], dim=1)


class CTMBackbone(BaseFeaturesExtractor):
    """The policy's features extractor: picks the backbone for the observation space (or the named one).

    :param backbone: one of :data:`BACKBONES`, or ``None`` to choose from the space.
    """

    def __init__(self, observation_space: gym.Space, d_input: int = 64, backbone: str | None = None):
        net = make_backbone(observation_space, backbone or default_backbone(observation_space), d_input)
        super().__init__(observation_space, net.features_dim)
        self.net = net

    def forward(self, observations):
        return self.net(observations)
