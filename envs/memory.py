"""T-maze memory task: a cue shown once, a corridor of length L, a two-armed junction."""

from __future__ import annotations

from typing import Any, SupportsFloat

from gymnasium.core import ActType, ObsType
from minigrid.core.world_object import Ball, Key, Wall, WorldObj

from envs.navigation import NavigationEnv
from envs.observation import EncodedGrid

# Cue and arm objects are told apart by type only (same colour), so the object type is the
# single bit the agent has to carry down the corridor.
_CUE_TYPES: tuple[type[WorldObj], ...] = (Key, Ball)
_CUE_COLOR = "green"


class MemoryEnv(NavigationEnv):
    """Remember a cue seen at step 0, walk down a corridor, enter the arm that matches it.

    Layout for ``L = 4`` (grid ``(L + 3) x 7``; ``#`` wall, ``c`` cue, ``A`` agent facing
    east, ``k``/``b`` the key and ball ending the arms, ``.`` floor)::

        #######
        #####k#      <- arm object
        #c###.#      <- cue alcove beside the start, arm cell
        #A....#      <- corridor: L moves east from the start reach the junction (x = L + 1)
        #####.#
        #####b#
        #######

    The cue is a key or a ball placed beside the start. It is part of the **first observation
    only**: it is removed from the grid at the start of the first ``step``, before that step's
    observation is made, so no later observation (from any position or heading, partial or full
    view) and no later render contains it. The two arms end in one key and one ball, in random
    order. Entering the cell next to the object that matches the cue gives MiniGrid's reward;
    entering the other arm's cell ends the episode with reward 0. The shortest solution is
    always ``L + 2`` actions (L moves, one turn, one move), so the memory horizon is ``L``.

    Args:
        length: corridor length ``L`` (>= 2), the number of steps between seeing the cue and
            reaching the junction.
        max_steps: episode limit; defaults to ``10 * (L + 2)``, which makes the oracle's return
            (0.91) the same for every ``L`` so returns are comparable across a length sweep.
        **kwargs: :class:`envs.navigation.NavigationEnv` options (``agent_view_size``,
            ``render_mode``...).
    """

    HEIGHT = 7
    _MID = HEIGHT // 2

    def __init__(self, length: int = 8, max_steps: int | None = None, **kwargs: Any) -> None:
        if not isinstance(length, int) or length < 2:
            # With L = 1 the cue alcove would touch an arm and open a second route into it.
            raise ValueError(f"length must be an integer >= 2, got {length!r}")
        self.length = length
        self._cue_pos: tuple[int, int] | None = None
        super().__init__(
            width=length + 3,
            height=self.HEIGHT,
            max_steps=10 * (length + 2) if max_steps is None else max_steps,
            **kwargs,
        )

    @staticmethod
    def _gen_mission() -> str:
        return "remember the object shown at the start and enter the arm whose object matches it"

    def _gen_grid(self, width: int, height: int) -> None:
        mid = self._MID
        junction = self.length + 1
        self.grid = EncodedGrid(width, height)
        self.grid.wall_rect(0, 0, width, height)
        open_cells = {(x, mid) for x in range(1, junction + 1)}
        open_cells |= {(1, mid - 1), (junction, 1), (junction, 2), (junction, 4), (junction, 5)}
        for y in range(1, height - 1):
            for x in range(1, width - 1):
                if (x, y) not in open_cells:
                    self.grid.set(x, y, Wall())

        cue_type = _CUE_TYPES[int(self.np_random.integers(len(_CUE_TYPES)))]
        self._cue_pos = (1, mid - 1)
        self.put_obj(cue_type(_CUE_COLOR), *self._cue_pos)

        north_type, south_type = _CUE_TYPES if int(self.np_random.integers(2)) == 0 else _CUE_TYPES[::-1]
        self.put_obj(north_type(_CUE_COLOR), junction, 1)
        self.put_obj(south_type(_CUE_COLOR), junction, height - 2)
        north_arm, south_arm = (junction, 2), (junction, height - 3)
        success, failure = (north_arm, south_arm) if north_type is cue_type else (south_arm, north_arm)

        # Always the same start and heading, so the cue (beside the start) is in view at step 0
        # for every view size >= 3.
        self.agent_pos = (1, mid)
        self.agent_dir = 0
        self._set_task(waypoints=(success,), forbidden=frozenset({failure}))

    def step(self, action: ActType) -> tuple[ObsType, SupportsFloat, bool, bool, dict[str, Any]]:
        """Hide the cue (first step only), then step as usual."""
        if self._cue_pos is not None:
            self.grid.set(*self._cue_pos, None)
            self._cue_pos = None
        return super().step(action)
