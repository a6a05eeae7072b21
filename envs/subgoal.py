"""Maze navigation with sub-goals: key-door-goal, and touch-a-landmark-then-return."""

from __future__ import annotations

from typing import Any

from minigrid.core.world_object import Door, Floor, Goal, Key

from envs.maze import SquareMazeEnv, grid_from_walls
from envs.mazegen import (
    cell_parents,
    generate_maze,
    maze_cells,
    path_from_parents,
    reachable_cells,
)

_DOOR_COLOR = "yellow"  # as in MiniGrid's DoorKey; stands out against the grey walls
_LANDMARK_COLOR = "purple"


class KeyDoorMazeEnv(SquareMazeEnv):
    """Find the key, unlock the door that cuts the maze in two, reach the goal behind it.

    Each ``reset`` carves a new *perfect* maze (one route between any two cells, so a single
    door on that route really separates start and goal), picks a start and a goal at least two
    maze cells apart, puts a locked door on a passage of the route between them, and hides the
    key somewhere on the start's side. The sub-goals (pick up the key, toggle the door while
    holding it, reach the goal) must be done in order; the key stays in hand after unlocking.

    Args:
        size: side of the square grid, outer wall included (odd, >= 7).
        max_steps: episode limit; defaults to ``10 * size**2`` (MiniGrid's DoorKey convention).
        **kwargs: :class:`envs.navigation.NavigationEnv` options (``agent_view_size``,
            ``fully_observed``, ``render_mode``...).
    """

    steps_per_cell = 10
    min_size = 7  # start, key, door and goal must all fit

    def __init__(self, size: int = 9, max_steps: int | None = None, **kwargs: Any) -> None:
        super().__init__(size, 0.0, max_steps, **kwargs)

    @staticmethod
    def _gen_mission() -> str:
        return "pick up the key, unlock the door and reach the green goal square"

    def _gen_grid(self, width: int, height: int) -> None:
        rng = self.np_random
        walls = generate_maze(rng, width, height)
        self.grid = grid_from_walls(walls)
        cells = maze_cells(width, height)
        start = cells[int(rng.integers(len(cells)))]
        parents = cell_parents(walls, start)
        # >= 4 moves away means the route crosses at least two passages, so at least one
        # passage has more than the start cell on its start side (room for the key).
        far_cells = [c for c in cells if len(path_from_parents(parents, c)) >= 5]
        goal = far_cells[int(rng.integers(len(far_cells)))]
        route = path_from_parents(parents, goal)
        # Passages are the odd positions of a cell-to-cell route (cells sit at even ones).
        for i in rng.permutation(len(route) // 2):
            door = route[2 * int(i) + 1]
            start_side = reachable_cells(walls, start, blocked=frozenset({door}))
            start_side.discard(start)
            if start_side:
                break
        else:  # unreachable given far_cells; guards the invariant rather than placing no key
            raise RuntimeError(f"no door position with room for a key between {start} and {goal}")
        key_cells = sorted(start_side)  # sorted: set order must not leak into the seeded draw
        key = key_cells[int(rng.integers(len(key_cells)))]

        self.put_obj(Door(_DOOR_COLOR, is_locked=True), *door)
        self.put_obj(Key(_DOOR_COLOR), *key)
        self.put_obj(Goal(), *goal)
        self.agent_pos = start
        self.agent_dir = int(rng.integers(4))
        self._set_task(waypoints=(goal,))


class ReturnToStartEnv(SquareMazeEnv):
    """Step on a purple landmark tile somewhere in the maze, then come back to the start.

    The start cell is not marked and the landmark does not change when touched, so under the
    egocentric view the agent must remember where it started (path integration) and whether it
    has already touched the landmark. Success is entering the start cell after the landmark.

    Args:
        size: side of the square grid, outer wall included (odd, >= 5).
        extra_openings: fraction of inner walls removed after carving (adds loops).
        max_steps: episode limit; defaults to ``8 * size**2``, the maze's ``4 * size**2`` for
            each of the two legs.
        **kwargs: :class:`envs.navigation.NavigationEnv` options (``agent_view_size``,
            ``render_mode``...).
    """

    steps_per_cell = 8

    def __init__(
        self, size: int = 9, extra_openings: float = 0.0, max_steps: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(size, extra_openings, max_steps, **kwargs)

    @staticmethod
    def _gen_mission() -> str:
        return "step on the purple tile, then return to where you started"

    def _gen_grid(self, width: int, height: int) -> None:
        rng = self.np_random
        self.grid = grid_from_walls(generate_maze(rng, width, height, self.extra_openings))
        cells = maze_cells(width, height)
        start_i, landmark_i = rng.choice(len(cells), size=2, replace=False)
        start, landmark = cells[int(start_i)], cells[int(landmark_i)]
        self.put_obj(Floor(_LANDMARK_COLOR), *landmark)
        self.agent_pos = start
        self.agent_dir = int(rng.integers(4))
        self._set_task(waypoints=(landmark, start))
