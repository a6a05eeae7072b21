"""Procedurally generated mazes: a new maze, start and goal every episode."""

from __future__ import annotations

from typing import Any

import numpy as np
from minigrid.core.world_object import Goal, Wall

from envs.mazegen import check_maze_size, generate_maze, maze_cells
from envs.navigation import NavigationEnv
from envs.observation import EncodedGrid


def grid_from_walls(walls: np.ndarray) -> EncodedGrid:
    """An :class:`EncodedGrid` with a ``Wall`` wherever ``walls[y, x]`` is true."""
    height, width = walls.shape
    grid = EncodedGrid(width, height)
    for y, x in zip(*np.nonzero(walls)):
        grid.set(int(x), int(y), Wall())
    return grid


class SquareMazeEnv(NavigationEnv):
    """Base of the maze-based tasks: a square grid of side ``size``, a maze carved in it every episode.

    Subclasses set ``steps_per_cell`` (the default step limit is ``steps_per_cell * size**2``) and
    ``min_size`` (the smallest grid their objects fit in).
    """

    steps_per_cell: int = 4
    min_size: int = 5

    def __init__(
        self, size: int = 11, extra_openings: float = 0.0, max_steps: int | None = None, **kwargs: Any
    ) -> None:
        check_maze_size(size, size)
        if size < self.min_size:
            raise ValueError(f"size must be >= {self.min_size} for {type(self).__name__}, got {size}")
        if not 0.0 <= extra_openings <= 1.0:
            raise ValueError(f"extra_openings must be in [0, 1], got {extra_openings!r}")
        self.size = size
        self.extra_openings = extra_openings
        super().__init__(
            width=size,
            height=size,
            max_steps=self.steps_per_cell * size * size if max_steps is None else max_steps,
            **kwargs,
        )


class MazeEnv(SquareMazeEnv):
    """Reach the green goal square of a freshly generated maze.

    Each ``reset`` carves a new maze with the recursive backtracker (a perfect maze unless
    ``extra_openings > 0``), then puts the goal and the agent on two distinct maze cells, the
    agent facing a random direction. Under the default egocentric view the agent sees only
    corridors around it, so it has to remember which branches it has explored; the fully
    observed variant turns the same task into pure planning.

    Args:
        size: side of the square grid, outer wall included (odd, >= 5).
        extra_openings: fraction of inner walls removed after carving (adds loops).
        max_steps: episode limit; defaults to ``4 * size**2`` (MiniGrid's convention for its
            empty rooms). A shortest solution of a perfect maze takes fewer than ``size**2``
            actions (at most one move and one turn per open cell), so this leaves ample slack.
        **kwargs: :class:`envs.navigation.NavigationEnv` options (``agent_view_size``,
            ``fully_observed``, ``render_mode``...).
    """

    @staticmethod
    def _gen_mission() -> str:
        return "reach the green goal square"

    def _gen_grid(self, width: int, height: int) -> None:
        self.grid = grid_from_walls(generate_maze(self.np_random, width, height, self.extra_openings))
        cells = maze_cells(width, height)
        start_i, goal_i = self.np_random.choice(len(cells), size=2, replace=False)
        goal = cells[int(goal_i)]
        self.put_obj(Goal(), *goal)
        self.agent_pos = cells[int(start_i)]
        self.agent_dir = int(self.np_random.integers(4))
        self._set_task(waypoints=(goal,))
