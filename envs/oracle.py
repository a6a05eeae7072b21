"""Shortest-path oracle shared by every navigation environment in :mod:`envs`.

The oracle answers "what is the next action of a shortest solution from *here*?" for any
MiniGrid episode whose task can be written as a :class:`Task`: enter a sequence of waypoint
cells in order, never entering a forbidden cell. It runs a breadth-first search over the
episode's abstract state

    (x, y, direction, waypoints reached, carried item, items picked up, doors opened)

with MiniGrid's own transition rules (turn left/right, move forward, pick up, toggle), so keys
and locked doors are handled by the same search as plain mazes; no environment carries its
own solver.

Why a cached plan: a BFS costs a few milliseconds in Python, and an agent imitating the oracle
asks once per step. The oracle therefore stores the whole shortest path found by one search as
a ``state -> (action, steps left)`` table. Each call only recomputes the live abstract state
(O(number of doors and items)) and looks it up; a new search runs only when the agent has left
the planned path (it took a different action), the grid changed in a way the plan does not
describe (an item dropped elsewhere, a door closed again, an object removed by the
environment), or a new episode started (a new ``Grid`` object).

Not modelled (none of the environments here need them): dropping items, opening boxes, and
closing doors. None of these can shorten a solution when at most one item has to be carried.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

from minigrid.core.actions import Actions
from minigrid.core.grid import Grid
from minigrid.core.world_object import Door, WorldObj

Pos = tuple[int, int]

# MiniGrid's direction vectors, indexed by ``agent_dir`` (0 right, 1 down, 2 left, 3 up).
_DIR_VEC: tuple[Pos, ...] = ((1, 0), (0, 1), (-1, 0), (0, -1))

# Abstract search state: (x, y, dir, reached, carried item index or -1, removed-item bits, open-door bits)
_State = tuple[int, int, int, int, int, int, int]


@dataclass(frozen=True)
class Task:
    """What solving an episode means, in terms the oracle and the environment share.

    Attributes:
        waypoints: cells to enter in this order; entering the last one solves the episode.
        reached: how many waypoints the agent has entered so far in this episode.
        forbidden: cells whose entry ends the episode as a failure (e.g. the wrong arm of a
            T-maze). Lava, and goal squares that are not the final waypoint, are treated as
            forbidden automatically because MiniGrid ends the episode on entering them.
    """

    waypoints: tuple[Pos, ...]
    reached: int = 0
    forbidden: frozenset[Pos] = frozenset()


class OracleEnv(Protocol):
    """The part of a MiniGrid environment the oracle reads."""

    grid: Grid
    agent_pos: tuple[int, int]
    agent_dir: int
    carrying: WorldObj | None

    def oracle_task(self) -> Task:
        """The episode's task and the progress made on it."""
        ...


class NoSolutionError(RuntimeError):
    """Raised when the task cannot be solved from the current state (e.g. the episode is over)."""


class _Snapshot:
    """The static structure of one grid plus the identity of its doors and pickable items.

    Built once per search; :meth:`live_state` maps the environment's current state into the
    snapshot's abstract state, or returns ``None`` when the grid has changed in a way the
    snapshot cannot express (then a new snapshot is needed).
    """

    def __init__(self, env: OracleEnv) -> None:
        task = env.oracle_task()
        grid = env.grid
        self.grid = grid  # held (not just its id) so identity checks can't be fooled by id reuse
        self.width, self.height = grid.width, grid.height
        self.waypoints = tuple((int(x), int(y)) for x, y in task.waypoints)
        final = self.waypoints[-1] if self.waypoints else None

        self.blocked: set[Pos] = set()
        self.forbidden: set[Pos] = {(int(x), int(y)) for x, y in task.forbidden}
        self.door_index: dict[Pos, int] = {}
        self.doors: list[Door] = []
        self.door_locked: list[bool] = []
        self.item_index: dict[Pos, int] = {}
        self.items: list[WorldObj] = []
        self.item_pos: list[Pos | None] = []
        initially_open = 0
        for y in range(self.height):
            for x in range(self.width):
                obj = grid.get(x, y)
                if obj is None:
                    continue
                if isinstance(obj, Door):
                    if obj.is_open:
                        initially_open |= 1 << len(self.doors)
                    self.door_index[(x, y)] = len(self.doors)
                    self.doors.append(obj)
                    self.door_locked.append(obj.is_locked)
                elif obj.can_pickup():
                    self.item_index[(x, y)] = len(self.items)
                    self.items.append(obj)
                    self.item_pos.append((x, y))
                elif not obj.can_overlap():
                    self.blocked.add((x, y))
                elif obj.type == "lava" or (obj.type == "goal" and (x, y) != final):
                    # MiniGrid ends the episode on these; only the final goal ends it well.
                    self.forbidden.add((x, y))
        self.initially_open = initially_open
        if env.carrying is not None:
            # The carried item is tracked too (already "removed" from the grid), so that the
            # search knows e.g. which key colour the agent holds.
            self.items.append(env.carrying)
            self.item_pos.append(None)

    def live_state(self, env: OracleEnv) -> _State | None:
        """The environment's current abstract state, or ``None`` if this snapshot is stale."""
        if env.grid is not self.grid:
            return None
        grid = self.grid
        carried = -1
        removed = 0
        for k, item in enumerate(self.items):
            pos = self.item_pos[k]
            if env.carrying is item:
                carried = k
                removed |= 1 << k
            elif pos is None or grid.get(*pos) is not item:
                return None  # dropped somewhere new, or removed by the environment
        if env.carrying is not None and carried < 0:
            return None  # carrying something the snapshot never saw
        opened = 0
        for k, door in enumerate(self.doors):
            if door.is_open:
                opened |= 1 << k
            elif door.is_locked != self.door_locked[k]:
                return None  # e.g. unlocked and closed again: not a state the search knows
        x, y = env.agent_pos
        task = env.oracle_task()
        return (int(x), int(y), int(env.agent_dir), task.reached, carried, removed, opened)

    def _can_enter(self, pos: Pos, removed: int, opened: int) -> bool:
        """Whether moving forward onto ``pos`` succeeds (ignores forbidden-ness)."""
        x, y = pos
        if not (0 <= x < self.width and 0 <= y < self.height) or pos in self.blocked:
            return False
        door = self.door_index.get(pos)
        if door is not None:
            return bool(opened >> door & 1)
        item = self.item_index.get(pos)
        if item is not None:
            return bool(removed >> item & 1)
        return True

    def _successors(self, state: _State) -> list[tuple[int, _State]]:
        """``(action, next_state)`` pairs for every action that changes the abstract state."""
        x, y, d, reached, carried, removed, opened = state
        out = [
            (int(Actions.left), (x, y, (d - 1) % 4, reached, carried, removed, opened)),
            (int(Actions.right), (x, y, (d + 1) % 4, reached, carried, removed, opened)),
        ]
        dx, dy = _DIR_VEC[d]
        front = (x + dx, y + dy)
        if self._can_enter(front, removed, opened) and front not in self.forbidden:
            if reached < len(self.waypoints) and front == self.waypoints[reached]:
                reached_next = reached + 1
            else:
                reached_next = reached
            out.append((int(Actions.forward), (*front, d, reached_next, carried, removed, opened)))
        item = self.item_index.get(front)
        if item is not None and carried < 0 and not removed >> item & 1:
            out.append((int(Actions.pickup), (x, y, d, reached, item, removed | 1 << item, opened)))
        door = self.door_index.get(front)
        if door is not None and not opened >> door & 1:
            unlocked = not self.door_locked[door]
            if not unlocked and carried >= 0:
                key = self.items[carried]
                unlocked = key.type == "key" and key.color == self.doors[door].color
            if unlocked:
                out.append((int(Actions.toggle), (x, y, d, reached, carried, removed, opened | 1 << door)))
        return out

    def search(self, start: _State) -> list[tuple[_State, int]]:
        """Breadth-first search from ``start``; returns the shortest ``(state, action)`` path.

        Raises:
            NoSolutionError: if no sequence of actions completes the task.
        """
        goal_reached = len(self.waypoints)
        if start[3] >= goal_reached:
            raise NoSolutionError("the task is already complete; reset the environment")
        parents: dict[_State, tuple[_State, int] | None] = {start: None}
        frontier = deque([start])
        while frontier:
            state = frontier.popleft()
            for action, nxt in self._successors(state):
                if nxt in parents:
                    continue
                parents[nxt] = (state, action)
                if nxt[3] == goal_reached:
                    path: list[tuple[_State, int]] = []
                    link = parents[nxt]
                    while link is not None:
                        path.append(link)
                        link = parents[link[0]]
                    return path[::-1]
                frontier.append(nxt)
        raise NoSolutionError("no action sequence solves the task from the current state")


class ShortestPathOracle:
    """Shortest-solution actions for one environment instance, with a per-plan cache.

    Create one per environment and call :meth:`next_action` / :meth:`steps_to_go` with it.
    """

    def __init__(self) -> None:
        self._snapshot: _Snapshot | None = None
        # state on the current shortest path -> (action to take there, actions left including it)
        self._plan: dict[_State, tuple[int, int]] = {}

    def _lookup(self, env: OracleEnv) -> tuple[int, int]:
        if self._snapshot is not None:
            state = self._snapshot.live_state(env)
            if state is not None and state in self._plan:
                return self._plan[state]
        snapshot = _Snapshot(env)
        start = snapshot.live_state(env)
        assert start is not None, "a fresh snapshot always describes the grid it was taken from"
        path = snapshot.search(start)
        self._snapshot = snapshot
        self._plan = {state: (action, len(path) - i) for i, (state, action) in enumerate(path)}
        return self._plan[start]

    def next_action(self, env: OracleEnv) -> int:
        """The first action of a shortest solution from the environment's current state."""
        return self._lookup(env)[0]

    def steps_to_go(self, env: OracleEnv) -> int:
        """Length, in actions, of a shortest solution from the environment's current state."""
        return self._lookup(env)[1]
