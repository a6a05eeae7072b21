"""Backbones: observation -> flat feature vector ``f`` fed to the CTM's synapses every internal tick.

Each backbone is a Stable-Baselines3 ``BaseFeaturesExtractor``, so it plugs into SB3 policies unchanged.
The classic-control and MiniGrid backbones are the reference RL agent's; pixels use SB3's NatureCNN.

The CTM reads the features only through the first synapse layer, as ``W_f f`` (the feature term, see
:mod:`ctm_rl.ctm`).  :func:`project` computes that product for any backbone; the MiniGrid backbone computes
it without the features, which are ``H * W * d_input`` wide: see :meth:`MiniGridBackbone.project`.
"""

from __future__ import annotations

import gymnasium as gym
import torch
import torch.nn.functional as F
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


def project(backbone: nn.Module, observations, weight: torch.Tensor) -> torch.Tensor:
    """``f @ weight.T`` for the features ``f = backbone(observations)``, ``(B, out)`` for ``weight``
    ``(out, features_dim)``: by the backbone's own ``project`` where it has one (cheaper than ``f``)."""
    own = getattr(backbone, "project", None)
    return own(observations, weight) if own is not None else F.linear(backbone(observations), weight)


class MiniGridBackbone(BaseFeaturesExtractor):
    """The reference's MiniGrid backbone over ``(H, W, 3)`` (object, colour, state) index grids.

    Every cell is embedded as ``concat(object, colour, state, position)`` embeddings, projected by two
    ``Linear -> GLU -> LayerNorm`` blocks to ``d_input``, and the cells are flattened row-major:
    ``features_dim = H * W * d_input``.

    Grid worlds repeat themselves: a batch of egocentric views holds few distinct grids (a T-maze rollout of
    2,048 views, about 40), and those few distinct cells (walls, floor and a few objects, at H * W
    positions).  The blocks run once per distinct cell, and the features of a grid are computed once per
    distinct grid, then gathered.
    """

    def __init__(self, observation_space: gym.Space, d_input: int = 64, embedding_dim: int = 8):
        height, width = observation_space.shape[:2]
        super().__init__(observation_space, height * width * d_input)
        self.d_input = d_input
        self.object_embedding = nn.Embedding(MINIGRID_OBJECTS, embedding_dim)
        self.color_embedding = nn.Embedding(MINIGRID_COLOURS, embedding_dim)
        self.state_embedding = nn.Embedding(MINIGRID_STATES, embedding_dim)
        self.position_embedding = nn.Embedding(height * width, embedding_dim)
        self.projector = nn.Sequential(*glu_block(4 * embedding_dim, d_input), *glu_block(d_input, d_input))
        # Random odd multipliers that hash a grid to one integer (see _distinct_grids); not learned, not saved.
        hash_weights = torch.randint(1, 2**62, (height * width * 3,), generator=torch.Generator().manual_seed(0))
        self.register_buffer("hash_weights", hash_weights | 1, persistent=False)

    def _distinct_grids(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(grids, rows)``: the distinct grids ``(V, H, W, 3)`` of the batch, and each grid's row ``(B,)``."""
        flat = observations.reshape(len(observations), -1).long()
        # Grouping by a hash is one 1-D unique, where a row-wise unique sorts whole grids (ten times slower).
        # The grids of each group are then compared: a hash collision, however unlikely, falls back to it.
        _, rows = torch.unique((flat * self.hash_weights).sum(1), return_inverse=True)
        first = torch.empty(int(rows.max()) + 1, dtype=torch.long, device=flat.device)
        first.scatter_(0, rows, torch.arange(len(flat), device=flat.device))
        grids = flat[first]
        if not torch.equal(grids[rows], flat):
            grids, rows = torch.unique(flat, dim=0, return_inverse=True)
        return grids.view(-1, *observations.shape[1:]), rows

    def _distinct_cells(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(cells, positions, inverse)``: the features ``(U, d_input)`` of the U distinct cells of the batch,
        their positions ``(U,)`` in ascending order, and each grid cell's row in ``cells``, ``(B, H * W)``."""
        grid = observations.long().flatten(1, 2)  # (B, H * W, 3), row-major cells
        n_cells = grid.shape[1]
        per_position = MINIGRID_OBJECTS * MINIGRID_COLOURS * MINIGRID_STATES
        cell_codes = (grid[..., 0] * MINIGRID_COLOURS + grid[..., 1]) * MINIGRID_STATES + grid[..., 2]
        # Position first in the code, so that the sorted distinct codes are grouped by position.
        codes = torch.arange(n_cells, device=grid.device) * per_position + cell_codes
        distinct, inverse = torch.unique(codes, return_inverse=True)
        positions, cell_codes = distinct.div(per_position, rounding_mode="floor"), distinct % per_position
        cells = torch.cat(
            (
                self.object_embedding(cell_codes.div(MINIGRID_COLOURS * MINIGRID_STATES, rounding_mode="floor")),
                self.color_embedding(cell_codes.div(MINIGRID_STATES, rounding_mode="floor") % MINIGRID_COLOURS),
                self.state_embedding(cell_codes % MINIGRID_STATES),
                self.position_embedding(positions),
            ),
            dim=-1,
        )
        return self.projector(cells), positions, inverse

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        grids, rows = self._distinct_grids(observations)
        cells, _, inverse = self._distinct_cells(grids)
        return cells[inverse].flatten(1)[rows]

    def project(self, observations: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``forward(observations) @ weight.T`` without the ``(B, H * W * d_input)`` features.

        The product is a sum over cells of each cell's features times its position's columns of ``weight``.
        Each distinct cell's share is computed once (one batched matmul over positions, the distinct cells
        of each position padded to the same count), and every distinct grid sums its cells' shares (an
        embedding bag).
        """
        grids, rows = self._distinct_grids(observations)
        cells, positions, inverse = self._distinct_cells(grids)
        n_cells = inverse.shape[1]
        counts = torch.bincount(positions, minlength=n_cells)
        rank = torch.arange(len(positions), device=positions.device) - (counts.cumsum(0) - counts)[positions]
        padded = cells.new_zeros(n_cells, int(counts.max()), self.d_input)
        padded[positions, rank] = cells
        weight_by_position = weight.view(weight.shape[0], n_cells, self.d_input).permute(1, 2, 0)
        shares = torch.bmm(padded, weight_by_position)[positions, rank]  # (U, out)
        return F.embedding_bag(inverse, shares, mode="sum")[rows]


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

    def project(self, observations: dict[str, torch.Tensor], weight: torch.Tensor) -> torch.Tensor:
        """``forward(observations) @ weight.T``: the sum of each key's product with its columns of ``weight``."""
        parts = weight.split([extractor.features_dim for extractor in self.extractors.values()], dim=1)
        return sum(project(extractor, observations[key], part)
                   for (key, extractor), part in zip(self.extractors.items(), parts))


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

    def project(self, observations, weight: torch.Tensor) -> torch.Tensor:
        """``forward(observations) @ weight.T``, see :func:`project`."""
        return project(self.net, observations, weight)
