"""Maze generation and small grid-graph helpers (pure NumPy, no MiniGrid).

A maze lives on a ``height x width`` boolean wall map ``walls[y, x]``. Both sides are odd so
that the *cells* of the maze sit at odd coordinates ``(x, y)`` and the cells between two
neighbouring maze cells (one coordinate even) are *passages* that are either carved open or
left as walls. The outer ring is always wall, matching MiniGrid's bordered grids.

Kept separate from the environments so generation can be tested and reused (the plain maze and
the sub-goal mazes share it) without building a MiniGrid grid.
"""

from __future__ import annotations

from collections import deque

import numpy as np

Pos = tuple[int, int]

# The four grid neighbours, in MiniGrid's direction order (right, down, left, up).
_STEPS: tuple[Pos, ...] = ((1, 0), (0, 1), (-1, 0), (0, -1))


def check_maze_size(width: int, height: int) -> None:
    """Raise ``ValueError`` unless ``width`` x ``height`` can hold a bordered maze.

    Both sides must be odd (cells at odd coordinates, walls/passages at even ones) and at least
    5, the smallest size with more than one maze cell.
    """
    for name, side in (("width", width), ("height", height)):
        if not isinstance(side, (int, np.integer)) or side < 5 or side % 2 == 0:
            raise ValueError(f"maze {name} must be an odd integer >= 5, got {side!r}")


def maze_cells(width: int, height: int) -> list[Pos]:
    """All maze cells (odd coordinates) of a ``width`` x ``height`` maze, row by row."""
    return [(x, y) for y in range(1, height - 1, 2) for x in range(1, width - 1, 2)]


def generate_maze(
    rng: np.random.Generator, width: int, height: int, extra_openings: float = 0.0
) -> np.ndarray:
    """Carve a random maze with the recursive backtracker (randomised depth-first search).

    With ``extra_openings == 0`` the result is a *perfect* maze: every pair of open cells is
    joined by exactly one path, so the solution is unique and dead ends are common, which is
    what makes mazes a test of exploration and memory. ``extra_openings`` (a fraction in
    ``[0, 1]``) then knocks down that share of the remaining inner passage walls, adding loops.

    Args:
        rng: source of randomness; pass the environment's ``np_random`` so that
            ``reset(seed=...)`` fixes the maze.
        width: grid width including the outer wall (odd, >= 5).
        height: grid height including the outer wall (odd, >= 5).
        extra_openings: fraction of inner passage walls to remove after carving.

    Returns:
        Boolean array of shape ``(height, width)``, ``True`` where there is a wall.
    """
    check_maze_size(width, height)
    if not 0.0 <= extra_openings <= 1.0:
        raise ValueError(f"extra_openings must be in [0, 1], got {extra_openings!r}")

    walls = np.ones((height, width), dtype=bool)
    cells_x, cells_y = (width - 1) // 2, (height - 1) // 2
    first = (2 * int(rng.integers(cells_x)) + 1, 2 * int(rng.integers(cells_y)) + 1)
    walls[first[1], first[0]] = False
    # An explicit stack instead of recursion: a 21x21 maze already has 100 cells and larger
    # ones would hit Python's recursion limit.
    stack = [first]
    while stack:
        x, y = stack[-1]
        unvisited = [
            (x + 2 * dx, y + 2 * dy)
            for dx, dy in _STEPS
            if 0 < x + 2 * dx < width - 1 and 0 < y + 2 * dy < height - 1 and walls[y + 2 * dy, x + 2 * dx]
        ]
        if not unvisited:
            stack.pop()
            continue
        nx, ny = unvisited[int(rng.integers(len(unvisited)))]
        walls[(y + ny) // 2, (x + nx) // 2] = False  # the passage between the two cells
        walls[ny, nx] = False
        stack.append((nx, ny))

    if extra_openings > 0.0:
        # Inner passage walls: exactly one even coordinate, strictly inside the border.
        closed = [
            (x, y)
            for y in range(1, height - 1)
            for x in range(1, width - 1)
            if (x % 2) != (y % 2) and walls[y, x]
        ]
        n_open = round(extra_openings * len(closed))
        if n_open:
            for i in rng.choice(len(closed), size=n_open, replace=False):
                x, y = closed[int(i)]
                walls[y, x] = False
    return walls


def cell_parents(walls: np.ndarray, start: Pos) -> dict[Pos, Pos | None]:
    """Breadth-first search tree over open cells from ``start`` (4-connected, positions only).

    Maps every reachable open cell to its predecessor on a shortest path from ``start``
    (``start`` maps to ``None``). The environments use it to lay out goals and sub-goals along
    routes; scoring the agent is :mod:`envs.oracle`'s job (it also counts turns and actions).
    """
    parents: dict[Pos, Pos | None] = {start: None}
    frontier = deque([start])
    while frontier:
        cur = frontier.popleft()
        for dx, dy in _STEPS:
            nxt = (cur[0] + dx, cur[1] + dy)
            if nxt not in parents and not walls[nxt[1], nxt[0]]:
                parents[nxt] = cur
                frontier.append(nxt)
    return parents


def path_from_parents(parents: dict[Pos, Pos | None], goal: Pos) -> list[Pos]:
    """The path from the search root to ``goal`` (both included) in a :func:`cell_parents` tree."""
    path = [goal]
    while (prev := parents[path[-1]]) is not None:
        path.append(prev)
    return path[::-1]


def reachable_cells(walls: np.ndarray, start: Pos, blocked: frozenset[Pos] = frozenset()) -> set[Pos]:
    """Open cells reachable from ``start`` without entering a wall or a ``blocked`` cell."""
    seen = {start}
    frontier = [start]
    while frontier:
        x, y = frontier.pop()
        for dx, dy in _STEPS:
            nxt = (x + dx, y + dy)
            if nxt not in seen and nxt not in blocked and not walls[nxt[1], nxt[0]]:
                seen.add(nxt)
                frontier.append(nxt)
    return seen
