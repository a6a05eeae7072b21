"""All envs of one ``CTM/`` grid id stepped at once with NumPy: a drop-in for SB3's ``DummyVecEnv``.

``DummyVecEnv`` steps its envs one after the other, and one MiniGrid step is mostly Python-level
work (object look-ups, the view cut-out, dict building), so 64 envs cost 64 times one env.
:class:`BatchedGridVecEnv` keeps the state of all ``N`` envs in arrays instead:

* the grids as one ``(N, W + 2P, H + 2P, 4)`` uint8 array: per cell MiniGrid's ``(object, colour,
  state)`` code plus a byte of flags (see-through, walkable, ends the episode, forbidden by the
  task, can be picked up, empty, door), so that a cell is one 4-byte word to gather and what an
  action does to it is one table look-up. The grids are framed by ``P = view - 1`` cells of wall,
  so every egocentric view is an in-bounds gather (MiniGrid's ``Grid.slice`` also shows cells
  outside the grid as walls); cells are addressed by flat index, so moving, reading the front cell
  and gathering a view are index arithmetic;
* agent cell and direction, step count, carried object's code, the task (waypoint cells in order,
  progress) and success flags, one entry per env.

A step applies MiniGrid's rules (turn, move onto empty/floor/goal/open door, pick up a key or ball
with an empty hand, drop onto an empty cell, toggle a door: a locked one opens with a key of its
colour) to all envs with array operations; then :class:`envs.navigation.NavigationEnv`'s task rules
(forbidden cells end the episode, waypoints in order, reward ``1 - 0.9 * step_count / max_steps``)
and the time limits. Views are one gather per step with per-direction offset tables; occlusion is
MiniGrid's ``Grid.process_vis`` sweep, done row by row for all envs at once with one look-up per row
in a precomputed table; the agent's own cell shows the carried object, as in ``MiniGridEnv.gen_obs``.
At 64 envs NumPy's fixed cost per call dominates, hence whole-array table look-ups rather than
chains of comparisons, and plain indexing rather than ``np.take``-style wrappers.

Episode generation is not re-implemented: every env keeps its own instance (the chain
``env_fns[i]()`` returns, e.g. ``Monitor(gym.make(id, max_episode_steps=...))``) and resets through
it, so its ``np_random`` makes exactly the draws it would make alone, and ``info["optimal_steps"]``
comes from its oracle; the new episode is then copied into the arrays. Resets are rare next to
steps. The instance is also how ``render``, ``get_attr``, ``set_attr`` and ``env_method`` work: the
arrays are written back into it first (:meth:`BatchedGridVecEnv._sync`), and after ``set_attr`` or
``env_method`` read from it again.

Observations, rewards, dones and infos (``is_success``, ``TimeLimit.truncated``,
``terminal_observation``, Monitor's ``episode`` with ``r`` and ``l``; ``reset_infos`` with
``optimal_steps``) are identical to ``DummyVecEnv`` over the same env chains, seeds and actions
(tests/test_batched_envs.py). A ``FlattenObservation`` in the chain (how :mod:`agents` feeds
agents that do not embed grids) is honoured: observations are then gymnasium's ``flatten`` of the
dict (one-hot direction, then the image), as ``int64``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import FlattenObservation, OrderEnforcing, PassiveEnvChecker, TimeLimit
from minigrid.core.actions import Actions
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX, STATE_TO_IDX
from minigrid.core.world_object import Door, WorldObj
from stable_baselines3.common.env_util import is_wrapped
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from envs.maze import MazeEnv
from envs.memory import MemoryEnv
from envs.navigation import NavigationEnv
from envs.oracle import Task
from envs.subgoal import KeyDoorMazeEnv, ReturnToStartEnv

__all__ = ["MAX_OCCLUDED_VIEW", "BatchedGridVecEnv", "UnsupportedEnvError"]

# Exactly these classes: a subclass could change the rules the arrays replay.
_SUPPORTED_CLASSES = (MazeEnv, MemoryEnv, KeyDoorMazeEnv, ReturnToStartEnv)
# Wrappers that change nothing a step computes. TimeLimit and FlattenObservation are replayed, and so
# is an outermost Monitor's episode info.
_PASSIVE_WRAPPERS = (OrderEnforcing, PassiveEnvChecker)

# The occlusion tables have 4**view rows (see _sweep_tables): 262k for a 9x9 view.
MAX_OCCLUDED_VIEW = 9

_N_ACTIONS = len(Actions)
_LEFT, _RIGHT, _FORWARD = int(Actions.left), int(Actions.right), int(Actions.forward)
_PICKUP, _DROP, _TOGGLE = int(Actions.pickup), int(Actions.drop), int(Actions.toggle)
_EMPTY_IDX, _DOOR_IDX, _KEY_IDX = OBJECT_TO_IDX["empty"], OBJECT_TO_IDX["door"], OBJECT_TO_IDX["key"]
_EMPTY = np.array((_EMPTY_IDX, 0, 0), dtype=np.uint8)
_OPEN, _CLOSED, _LOCKED = STATE_TO_IDX["open"], STATE_TO_IDX["closed"], STATE_TO_IDX["locked"]
_AGENT = np.array((OBJECT_TO_IDX["agent"], COLOR_TO_IDX["red"]), dtype=np.uint8)
# MiniGrid's DIR_TO_VEC, indexed by agent_dir (0 right, 1 down, 2 left, 3 up), as (dx, dy).
_DIR_VEC = np.array([(1, 0), (0, 1), (-1, 0), (0, -1)], dtype=np.int64)
# Direction change per action: left -1, right +1, everything else 0.
_TURN = np.zeros(_N_ACTIONS, dtype=np.int64)
_TURN[_LEFT], _TURN[_RIGHT] = -1, 1

# The flags byte of a cell (the top byte of its word, hence see-through in bit 7: word >= 2**31).
_F_OVERLAP = 1  # WorldObj.can_overlap (an empty cell too): forward moves onto it
_F_ENDS = 2  # goal or lava: MiniGridEnv.step ends the episode when forward is taken into it
_F_FORBIDDEN = 4  # in the task's forbidden cells (the only flag that belongs to the cell, not the object)
_F_PICKUP = 8  # WorldObj.can_pickup, for the objects these envs hold (a Box would need its contents)
_F_EMPTY = 16  # nothing there: a drop target
_F_DOOR = 32  # a door: toggled
_F_SEE = 128  # WorldObj.see_behind: everything but walls and closed or locked doors
_SEE_WORD = _F_SEE << 24
_HAND_FULL = 1 << 11  # added to an action key when the agent carries something


def _code_flags() -> np.ndarray:
    """``[object, state]`` -> the flags byte of a cell holding that object."""
    table = np.zeros((max(OBJECT_TO_IDX.values()) + 1, max(STATE_TO_IDX.values()) + 1), dtype=np.uint8)
    for name, flags in (("empty", _F_OVERLAP | _F_EMPTY), ("floor", _F_OVERLAP), ("goal", _F_OVERLAP | _F_ENDS),
                        ("lava", _F_OVERLAP | _F_ENDS), ("key", _F_PICKUP), ("ball", _F_PICKUP)):
        table[OBJECT_TO_IDX[name]] = flags
    table[:] |= _F_SEE
    table[OBJECT_TO_IDX["wall"]] = 0
    table[_DOOR_IDX] = _F_DOOR
    table[_DOOR_IDX, _OPEN] |= _F_OVERLAP | _F_SEE
    return table


def _action_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tables over ``hand << 11 | action << 8 | front flags``: what the action does to the front cell.

    Returns:
        ``(moves, terminates, enters_allowed, interacts)``: forward onto a walkable cell; the episode
        ends (goal, lava, or a forbidden cell entered); a walkable, allowed cell is entered; pickup,
        drop or toggle may change the front cell or the hand.
    """
    key = np.arange(2 * _HAND_FULL)
    hand_full, action, flags = key >= _HAND_FULL, key >> 8 & 7, key & 255
    forward = action == _FORWARD
    moves = forward & (flags & _F_OVERLAP != 0)
    forbidden = flags & _F_FORBIDDEN != 0
    terminates = forward & (flags & _F_ENDS != 0) | moves & forbidden
    interacts = ((action == _PICKUP) & (flags & _F_PICKUP != 0) & ~hand_full
                 | (action == _DROP) & (flags & _F_EMPTY != 0) & hand_full
                 | (action == _TOGGLE) & (flags & _F_DOOR != 0))
    return moves, terminates, moves & ~forbidden, interacts


_CODE_FLAGS = _code_flags()
_MOVES, _TERMINATES, _ENTERS_ALLOWED, _INTERACTS = _action_tables()


class UnsupportedEnvError(ValueError):
    """The envs given cannot be stepped by :class:`BatchedGridVecEnv` (the message says why)."""


@cache
def _sweep_tables(size: int) -> tuple[np.ndarray, np.ndarray]:
    """One row of MiniGrid's ``Grid.process_vis`` sweep, tabulated for every input.

    ``process_vis`` goes row by row from the agent's row to the farthest. In a row, visibility
    spreads sideways from the cells already reached through see-through cells (an opaque cell is
    seen but passes nothing on); every visible see-through cell then reaches the cells straight
    and diagonally ahead of it in the next row (the same rule as
    :func:`envs.observation.visibility_mask`, which is tested against MiniGrid). With a row held as
    a bit set (bit ``i`` = column ``i``), the row's outcome depends only on ``key = reached << size
    | see_through``.

    Returns:
        ``(ahead, visible)``: ``ahead[key]`` is the next row's ``reached``, already shifted into its
        key; ``visible[key]`` the ``(size,)`` bool mask of the row's visible cells.
    """
    full = (1 << size) - 1
    key = np.arange(1 << (2 * size), dtype=np.int64)
    reached, see_through = key >> size, key & full
    visible = reached
    for _ in range(size - 1):  # spreading across a row takes at most size - 1 rounds
        spread = visible & see_through
        visible = (visible | spread << 1 | spread >> 1) & full
    lit = visible & see_through
    ahead = (lit | lit << 1 | lit >> 1) & full
    return ahead << size, (visible[:, None] >> np.arange(size) & 1).astype(bool)


class BatchedGridVecEnv(VecEnv):
    """SB3 ``VecEnv`` stepping ``N`` envs of one ``CTM/`` grid id at once (see the module docstring).

    Use it where ``DummyVecEnv`` would go: ``make_vec_env(factory, n_envs, seed,
    vec_env_cls=BatchedGridVecEnv)``. Each ``env_fns[i]()`` must return a
    :class:`envs.maze.MazeEnv`, :class:`envs.memory.MemoryEnv`, :class:`envs.subgoal.KeyDoorMazeEnv`
    or :class:`envs.subgoal.ReturnToStartEnv` (all of the same class, size and view), wrapped only in
    ``gym.make``'s own wrappers (``PassiveEnvChecker``, ``OrderEnforcing``, ``TimeLimit``), optionally
    ``FlattenObservation``, and optionally an outermost ``Monitor`` without files or extra keywords.
    Any constructor option of those envs is fine (it only changes generation, or is read from the
    instance), except ``render_mode="human"`` and, with occlusion on, views wider than
    :data:`MAX_OCCLUDED_VIEW`.

    ``set_attr`` sets the attribute where the env chain defines it (``set_wrapper_attr``), and, like
    ``env_method``, reads the env's state back afterwards, so that e.g. a changed ``max_steps`` or a
    moved agent takes effect. Monitor's own counters (``get_episode_rewards()``...) are not kept up
    to date: the episode statistics are in ``info["episode"]``.

    Args:
        env_fns: functions that each make one env chain (called once each, here).

    Raises:
        UnsupportedEnvError: if an env or wrapper is not one this class can step.
    """

    def __init__(self, env_fns: list[Callable[[], gym.Env]]) -> None:
        self.envs: list[gym.Env] = [make() for make in env_fns]
        n_envs = len(self.envs)
        layers = [_layers(env) for env in self.envs]
        self._monitors = [monitor for monitor, *_ in layers]
        self._inner = [inner for _, inner, *_ in layers]  # what is reset: the chain below Monitor
        self._time_limits = [limit for *_, limit, _, _ in layers]
        self._raw: list[NavigationEnv] = [raw for *_, raw in layers]
        if len({id(raw) for raw in self._raw}) != n_envs:
            raise UnsupportedEnvError("env_fns returned the same env instance more than once")
        layouts = {_layout(monitor is not None, flatten, raw) for monitor, _, _, flatten, raw in layers}
        if len(layouts) != 1:
            raise UnsupportedEnvError(f"all envs must share class, size, view and wrappers, got {layouts}")
        _, _, _, self._flatten, first = layers[0]
        self._monitored = self._monitors[0] is not None
        if first.render_mode == "human":
            raise UnsupportedEnvError("render_mode='human' renders inside every step; use 'rgb_array'")
        self._width, self._height, self._view = first.width, first.height, first.agent_view_size
        self._fully_observed = bool(first.fully_observed)
        self._occluded = not self._fully_observed and not first.see_through_walls
        if self._occluded and self._view > MAX_OCCLUDED_VIEW:
            raise UnsupportedEnvError(f"agent_view_size {self._view} is wider than the batched occlusion "
                                      f"supports ({MAX_OCCLUDED_VIEW}); see_through_walls=True lifts the limit")
        self._dict_space: spaces.Dict = first.observation_space

        # Arrays are made before VecEnv.__init__, which reads get_attr("render_mode").
        pad = self._pad = self._view - 1
        self._padded_height = self._height + 2 * pad
        self._cells_per_env = (self._width + 2 * pad) * self._padded_height
        self._cells = np.empty((n_envs, self._width + 2 * pad, self._padded_height, 4), dtype=np.uint8)
        wall = OBJECT_TO_IDX["wall"]
        self._cells[:] = wall, COLOR_TO_IDX["grey"], 0, _CODE_FLAGS[wall, 0]  # the frame: Grid.slice's walls
        # Views of it: the codes of the grids proper, each cell's 4 bytes, each cell as one word. The
        # words are little-endian so that the flags are the top byte on any machine.
        self._codes = self._cells[:, pad : pad + self._width, pad : pad + self._height, :3]
        self._cell_bytes = self._cells.reshape(-1, 4)
        self._cell_words = self._cells.reshape(-1).view("<u4")
        self._env_base = np.arange(n_envs, dtype=np.int64) * self._cells_per_env
        self._dir_step = _DIR_VEC[:, 0] * self._padded_height + _DIR_VEC[:, 1]
        self._make_gathers(n_envs)
        if self._occluded:
            self._sweep_ahead, self._sweep_visible = _sweep_tables(self._view)
            self._column_weights = (1 << np.arange(self._view)).astype(np.uint8 if self._view <= 8 else np.uint16)
            self._agent_row_key = np.full(n_envs, 1 << (self._view // 2) << self._view, dtype=np.int64)

        self._cell = np.zeros(n_envs, dtype=np.int64)  # flat index of the agent's cell
        self._dir = np.zeros(n_envs, dtype=np.int64)
        self._step_count = np.zeros(n_envs, dtype=np.int64)
        self._max_steps = np.ones(n_envs, dtype=np.int64)  # MiniGrid's, for the reward
        self._horizon = np.ones(n_envs, dtype=np.int64)  # min(max_steps, TimeLimit): truncation
        self._carry = np.tile(_EMPTY, (n_envs, 1))
        self._hand = np.zeros(n_envs, dtype=np.int64)  # _HAND_FULL when carrying, for the action keys
        self._waypoints = np.full((n_envs, 1), -1, dtype=np.int64)  # flat cells; widened on demand
        self._n_waypoints = np.zeros(n_envs, dtype=np.int64)
        self._reached = np.zeros(n_envs, dtype=np.int64)
        self._target = np.full(n_envs, -1, dtype=np.int64)  # next waypoint cell; -1 once all reached
        self._success = np.zeros(n_envs, dtype=bool)
        self._cue_cell = np.zeros(n_envs, dtype=np.int64)  # MemoryEnv's cue, removed by the first step
        self._cue_pending = np.zeros(n_envs, dtype=bool)
        self._any_cue_pending = False  # a Python bool: checked every step
        self._stale = np.zeros(n_envs, dtype=bool)  # instance behind the arrays (stepped since synced)
        self._actions = np.zeros(n_envs, dtype=np.int64)
        self._action_keys = np.zeros(n_envs, dtype=np.int64)

        super().__init__(n_envs, self.envs[0].observation_space, self.envs[0].action_space)
        self.metadata = self.envs[0].metadata

    # ------------------------------------------------------------------ VecEnv API

    def reset(self) -> VecEnvObs:
        """Reset every env through its instance (with the seeds and options set since the last reset)."""
        observations = []
        for i, env in enumerate(self._inner):
            options = {"options": self._options[i]} if self._options[i] else {}
            obs, self.reset_infos[i] = env.reset(seed=self._seeds[i], **options)
            self._load(i)
            observations.append(obs)
        self._reset_seeds()
        self._reset_options()
        if self._flatten:
            return np.stack(observations)
        return {key: np.stack([np.asarray(obs[key]) for obs in observations]).astype(space.dtype)
                for key, space in self._dict_space.spaces.items()}

    def step_async(self, actions: np.ndarray) -> None:
        """Store the actions (one integer per env) for :meth:`step_wait`."""
        actions = np.asarray(actions).reshape(self.num_envs)
        as_int = actions.astype(np.int64)
        if (actions.dtype.kind not in "iu" and (as_int != actions).any()) or (
                as_int.min() < 0 or as_int.max() >= _N_ACTIONS):
            raise ValueError(f"Unknown action in {actions}: actions are integers 0..{_N_ACTIONS - 1}")
        self._actions = as_int
        self._action_keys = as_int << 8

    def step_wait(self) -> VecEnvStepReturn:
        """Step all envs (MiniGrid's rules, then the task's), auto-resetting those that end."""
        actions = self._actions
        if self._any_cue_pending:  # MemoryEnv hides its cue before its first step acts
            cues = self._cue_cell[self._cue_pending]
            self._write_cells(cues, np.tile(_EMPTY, (cues.size, 1)))
            self._cue_pending[:] = self._any_cue_pending = False
        self._step_count += 1

        front = self._cell + self._dir_step[self._dir]
        front_words = self._cell_words[front]
        key = self._action_keys | front_words >> 24
        moved = _MOVES[key]
        self._cell = np.where(moved, front, self._cell)
        terminated = _TERMINATES[key]
        self._dir = (self._dir + _TURN[actions]) & 3
        interacting = _INTERACTS[key | self._hand].nonzero()[0]
        if interacting.size:  # pickups, drops and toggles are rare: handled for those envs only
            self._act_on_front(interacting, front, front_words)

        truncated = self._step_count >= self._horizon
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        entered = (_ENTERS_ALLOWED[key] & (self._cell == self._target)).nonzero()[0]
        if entered.size:
            solved = self._advance_tasks(entered)
            terminated[solved] = True
            # NavigationEnv's (MiniGrid's) reward, in float64 like Python's float arithmetic.
            rewards[solved] = 1 - 0.9 * (self._step_count[solved] / self._max_steps[solved])
        dones = terminated | truncated
        self._stale[:] = True

        obs = self._observe()
        # A running episode is neither truncated nor (until its last step) successful, but is_success is
        # read as NavigationEnv does, in case set_attr changed it; ending episodes get their full info below.
        infos: list[dict[str, Any]] = [{"is_success": success, "TimeLimit.truncated": False}
                                       for success in self._success.tolist()]
        for i in dones.nonzero()[0].tolist():  # episode ends: rare next to steps
            infos[i] = self._final_info(i, bool(truncated[i] and not terminated[i]), float(rewards[i]), obs)
            new_obs, self.reset_infos[i] = self._inner[i].reset()
            self._load(i)
            self._put_obs(obs, i, new_obs)
        return obs, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        """Close every env instance."""
        for env in self.envs:
            env.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Each env's MiniGrid rendering of its current state (``render_mode="rgb_array"`` only)."""
        if self.render_mode != "rgb_array":
            warnings.warn(f"The render mode is {self.render_mode}, but this method assumes it is "
                          "`rgb_array` to obtain images.", stacklevel=2)
            return [None for _ in self.envs]
        for i in range(self.num_envs):
            self._sync(i)
        return [env.render() for env in self.envs]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Attribute of each env chain (found as ``get_wrapper_attr`` does), its state brought up to date."""
        targets = self._get_indices(indices)
        for i in targets:
            self._sync(i)
        return [self.envs[i].get_wrapper_attr(attr_name) for i in targets]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute where the env chain defines it, then read the env's state back."""
        for i in self._get_indices(indices):
            self._sync(i)
            self.envs[i].set_wrapper_attr(attr_name, value)
            self._load(i)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        """Call a method of each env chain on its up-to-date state, then read the state back."""
        results = []
        for i in self._get_indices(indices):
            self._sync(i)
            results.append(self.envs[i].get_wrapper_attr(method_name)(*method_args, **method_kwargs))
            self._load(i)
        return results

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """Whether each env chain contains ``wrapper_class`` (Monitor's infos are replayed, so it counts)."""
        return [is_wrapped(self.envs[i], wrapper_class) for i in self._get_indices(indices)]

    # ------------------------------------------------------------------ step rules

    def _act_on_front(self, envs: np.ndarray, front: np.ndarray, front_words: np.ndarray) -> None:
        """Pick up, drop and toggle (``MiniGridEnv.step``, ``Door.toggle``) for ``envs``, which may act."""
        action, carry, front = self._actions[envs], self._carry[envs], front[envs]
        code = front_words[envs].view(np.uint8).reshape(-1, 4)[:, :3]
        pickup, drop, toggle = action == _PICKUP, action == _DROP, action == _TOGGLE
        locked = code[:, 2] == _LOCKED
        unlock = toggle & locked & (carry[:, 0] == _KEY_IDX) & (carry[:, 1] == code[:, 1])
        flip = toggle & ~locked  # open <-> closed
        new = code.copy()
        new[pickup] = _EMPTY
        new[drop] = carry[drop]
        new[unlock, 2] = _OPEN
        new[flip, 2] = np.where(code[flip, 2] == _OPEN, _CLOSED, _OPEN)
        carry[pickup] = code[pickup]
        carry[drop] = _EMPTY
        self._carry[envs] = carry
        self._hand[envs] = np.where(carry[:, 0] == _EMPTY_IDX, 0, _HAND_FULL)
        self._write_cells(front, new)

    def _write_cells(self, cells: np.ndarray, codes: np.ndarray) -> None:
        """Put ``codes`` (``(k, 3)``) in the flat ``cells``, updating their flags (forbidden-ness stays)."""
        self._cell_bytes[cells, :3] = codes
        self._cell_bytes[cells, 3] = _CODE_FLAGS[codes[:, 0], codes[:, 2]] | (self._cell_bytes[cells, 3]
                                                                              & _F_FORBIDDEN)

    def _advance_tasks(self, envs: np.ndarray) -> np.ndarray:
        """Count a waypoint reached in ``envs``; returns those that reached their last one."""
        self._reached[envs] += 1
        reached = self._reached[envs]
        finished = reached >= self._n_waypoints[envs]
        following = self._waypoints[envs, np.minimum(reached, self._waypoints.shape[1] - 1)]
        self._target[envs] = np.where(finished, -1, following)
        solved = envs[finished]
        self._success[solved] = True
        return solved

    def _final_info(self, i: int, time_limit_truncated: bool, reward: float, obs: VecEnvObs) -> dict[str, Any]:
        """The info of env ``i``'s last step, with DummyVecEnv's keys in its order, and Monitor's episode."""
        info: dict[str, Any] = {"is_success": bool(self._success[i])}
        if self._monitored:
            # Only an episode's final step can be rewarded (success ends it), so its return is that
            # reward, and its length is the env's step count.
            info["episode"] = {"r": round(reward, 6), "l": int(self._step_count[i]),
                               "t": round(time.time() - self._monitors[i].t_start, 6)}
        info["TimeLimit.truncated"] = time_limit_truncated
        if self._flatten:
            info["terminal_observation"] = obs[i].copy()
        else:
            info["terminal_observation"] = {"image": obs["image"][i].copy(), "direction": int(obs["direction"][i])}
        return info

    # ------------------------------------------------------------------ observations

    def _make_gathers(self, n_envs: int) -> None:
        """Index tables for the observations.

        ``_view_offsets[d, j, i]``: flat-cell offset from the agent's cell to cell ``[i, j]`` of its
        view when facing ``d``. View cell ``[i, j]`` (agent at ``[view // 2, view - 1]``, facing
        ``j = 0``) is ``view - 1 - j`` cells ahead and ``i - view // 2`` to the right: MiniGrid's
        ``get_view_exts`` slice after its ``agent_dir + 1`` left rotations. Views are gathered as
        ``[n, j, i]`` words, so that a view row is contiguous for the occlusion sweep.

        ``_image_bytes``: for every byte of the ``[n, i, j, 3]`` image (``[n, x, y, 3]`` when fully
        observed), the byte to take from the gathered words (from all cells): this one gather drops
        the flags byte and puts the view in MiniGrid's ``[i, j]`` order, much faster than a strided copy.
        """
        channel = np.arange(3)
        if self._fully_observed:
            x, y = np.meshgrid(np.arange(self._width), np.arange(self._height), indexing="ij")
            cells = self._env_base[:, None, None] + (x + self._pad) * self._padded_height + y + self._pad
            self._image_bytes = (cells[..., None] * 4 + channel).reshape(-1)
            return
        view = self._view
        j, i = np.meshgrid(np.arange(view), np.arange(view), indexing="ij")
        ahead, right = view - 1 - j, i - view // 2
        self._view_offsets = np.empty((4, view, view), dtype=np.int64)
        for direction, (dx, dy) in enumerate(_DIR_VEC.tolist()):
            rx, ry = -dy, dx  # MiniGridEnv.right_vec
            self._view_offsets[direction] = ((ahead * dx + right * rx) * self._padded_height
                                             + ahead * dy + right * ry)
        n, i, j = np.meshgrid(np.arange(n_envs), np.arange(view), np.arange(view), indexing="ij")
        self._image_bytes = ((((n * view + j) * view + i) * 4)[..., None] + channel).reshape(-1)

    def _observe(self) -> VecEnvObs:
        """The observations of all envs, as the envs (and FlattenObservation) would make them."""
        n_envs = self.num_envs
        if self._fully_observed:
            image = self._cells.reshape(-1)[self._image_bytes].reshape(n_envs, self._width, self._height, 3)
            local = self._cell - self._env_base
            x = local // self._padded_height - self._pad
            y = local % self._padded_height - self._pad
            image[np.arange(n_envs), x, y, :2] = _AGENT  # FullyObsWrapper's marking
            image[np.arange(n_envs), x, y, 2] = self._dir
        else:
            view = self._view
            words = self._cell_words[self._cell[:, None, None] + self._view_offsets[self._dir]]  # [n, j, i]
            if self._occluded:
                words *= self._visibility(words)  # unseen cells become (0, 0, 0), as in Grid.encode
            image = words.view(np.uint8).reshape(-1)[self._image_bytes].reshape(n_envs, view, view, 3)
            image[:, view // 2, view - 1] = self._carry  # after occlusion, as in MiniGrid
        if not self._flatten:
            return {"direction": self._dir.copy(), "image": image}
        # gymnasium's flatten of the Dict: its keys in order, Discrete parts one-hot.
        parts = {"direction": np.eye(4, dtype=np.int64)[self._dir], "image": image.reshape(n_envs, -1)}
        return np.concatenate([parts[key] for key in self._dict_space.spaces], axis=1,
                              dtype=self.observation_space.dtype)

    def _visibility(self, words: np.ndarray) -> np.ndarray:
        """``[n, j, i]`` bool mask of the view cells MiniGrid's ``process_vis`` lets each agent see.

        Args:
            words: the ``(N, view, view)`` gathered view cells, ``[n, j, i]``.
        """
        # rows[j, n]: row j of env n's view as a bit set over its columns i.
        rows = ((words >= _SEE_WORD).view(np.uint8) @ self._column_weights).T
        keys = np.empty(rows.shape, dtype=np.int64)
        reached = self._agent_row_key  # the agent's own cell, in its row's key
        for j in range(self._view - 1, -1, -1):  # rows are sequential; one table look-up each, for all envs
            key = keys[j]
            np.bitwise_or(reached, rows[j], out=key)
            reached = self._sweep_ahead[key]
        return self._sweep_visible[keys].transpose(1, 0, 2)  # [j, n, i] -> [n, j, i]

    def _put_obs(self, obs: VecEnvObs, i: int, env_obs: Any) -> None:
        """Write one env's observation (as its chain returned it) into row ``i`` of a batch."""
        if self._flatten:
            obs[i] = env_obs
        else:
            for key in obs:
                obs[key][i] = env_obs[key]

    # ------------------------------------------------------------------ arrays <-> instances

    def _cell_index(self, i: int, x: int, y: int) -> int:
        """Flat index of cell ``(x, y)`` of env ``i``'s grid."""
        return int(self._env_base[i]) + (x + self._pad) * self._padded_height + y + self._pad

    def _load(self, i: int) -> None:
        """Copy env ``i``'s instance state (after a reset, ``set_attr`` or ``env_method``) into the arrays."""
        raw = self._raw[i]
        cells = self._cells[i]
        self._codes[i] = raw.grid.codes()
        cells[..., 3] = _CODE_FLAGS[cells[..., 0], cells[..., 2]]
        task = raw.oracle_task()
        self._cell_bytes[[self._cell_index(i, x, y) for x, y in task.forbidden], 3] |= _F_FORBIDDEN
        waypoints = [self._cell_index(i, x, y) for x, y in task.waypoints]
        if len(waypoints) > self._waypoints.shape[1]:
            self._waypoints = np.pad(self._waypoints, ((0, 0), (0, len(waypoints) - self._waypoints.shape[1])),
                                     constant_values=-1)
        self._waypoints[i, : len(waypoints)] = waypoints
        self._n_waypoints[i] = len(waypoints)
        self._reached[i] = task.reached
        self._target[i] = waypoints[task.reached] if task.reached < len(waypoints) else -1
        self._success[i] = raw._success  # private: this module replays NavigationEnv's rules

        self._cell[i] = self._cell_index(i, *map(int, raw.agent_pos))
        self._dir[i] = raw.agent_dir
        self._step_count[i] = raw.step_count
        self._max_steps[i] = raw.max_steps
        limit = self._time_limits[i]
        self._horizon[i] = raw.max_steps if limit is None else min(raw.max_steps, limit._max_episode_steps)
        self._carry[i] = _EMPTY if raw.carrying is None else raw.carrying.encode()
        self._hand[i] = 0 if raw.carrying is None else _HAND_FULL
        cue = getattr(raw, "_cue_pos", None)  # MemoryEnv's cue, there until the first step
        self._cue_pending[i] = cue is not None
        if cue is not None:
            self._cue_cell[i] = self._cell_index(i, *cue)
            self._any_cue_pending = True
        self._stale[i] = False

    def _sync(self, i: int) -> None:
        """Write env ``i``'s array state into its instance (for rendering and attribute access).

        Only cells whose code differs are touched; doors change state in place and objects moved
        between cells and the agent's hand keep their identity, so the oracle's cached plan stays valid.
        """
        if not self._stale[i]:
            return
        raw = self._raw[i]
        grid = raw.grid
        codes = self._codes[i]
        changed = np.argwhere((grid.codes() != codes).any(axis=-1)).tolist()
        carry = tuple(self._carry[i].tolist())
        spare: list[WorldObj] = []  # objects taken off a cell or out of the hand, reused if they reappear
        if raw.carrying is not None and raw.carrying.encode() != carry:
            spare.append(raw.carrying)
        placed: list[tuple[int, int, tuple[int, ...]]] = []
        for x, y in changed:
            obj, new = grid.get(x, y), tuple(codes[x, y].tolist())
            if isinstance(obj, Door) and new[:2] == obj.encode()[:2]:
                obj.is_open, obj.is_locked = new[2] == _OPEN, new[2] == _LOCKED
                continue
            if obj is not None:
                spare.append(obj)
            placed.append((x, y, new))

        def take(code: tuple[int, ...]) -> WorldObj | None:
            for k, obj in enumerate(spare):
                if obj.encode() == code:
                    return spare.pop(k)
            return WorldObj.decode(*code)

        if carry[0] == _EMPTY_IDX:
            raw.carrying = None
        elif raw.carrying is None or raw.carrying.encode() != carry:
            raw.carrying = take(carry)
        for x, y, new in placed:
            grid.set(x, y, None if new[0] == _EMPTY_IDX else take(new))

        local = int(self._cell[i] - self._env_base[i])
        raw.agent_pos = (local // self._padded_height - self._pad, local % self._padded_height - self._pad)
        raw.agent_dir = int(self._dir[i])
        raw.step_count = int(self._step_count[i])
        task = raw.oracle_task()
        if task.reached != self._reached[i]:
            raw._task = Task(task.waypoints, int(self._reached[i]), task.forbidden)
        raw._success = bool(self._success[i])
        if not self._cue_pending[i] and getattr(raw, "_cue_pos", None) is not None:
            raw._cue_pos = None  # the grid above no longer has the cue
        if self._time_limits[i] is not None:
            self._time_limits[i]._elapsed_steps = raw.step_count
        self._stale[i] = False


def _layers(env: gym.Env) -> tuple[Monitor | None, gym.Env, TimeLimit | None, bool, NavigationEnv]:
    """``(monitor, chain below it, time limit, flattened, raw env)`` of one env chain, checked."""
    raw = env.unwrapped
    if type(raw) not in _SUPPORTED_CLASSES:
        names = ", ".join(cls.__name__ for cls in _SUPPORTED_CLASSES)
        raise UnsupportedEnvError(f"{type(raw).__name__} is not a grid env it can step (only {names}: "
                                  "the CTM/ Maze, Memory, KeyDoorMaze and ReturnToStart ids)")
    monitor = env if type(env) is Monitor else None
    if monitor is not None and (monitor.results_writer is not None or monitor.reset_keywords
                                or monitor.info_keywords):
        raise UnsupportedEnvError("Monitor with a log file, reset_keywords or info_keywords is not replayed")
    inner = env.env if monitor is not None else env
    limit, flatten, layer = None, False, inner
    while layer is not raw:
        if type(layer) is TimeLimit:
            limit = layer
        elif type(layer) is FlattenObservation:
            flatten = True
        elif type(layer) not in _PASSIVE_WRAPPERS:
            where = " (Monitor must be the outermost wrapper)" if type(layer) is Monitor else ""
            raise UnsupportedEnvError(f"wrapper {type(layer).__name__} is not supported{where}")
        layer = layer.env
    return monitor, inner, limit, flatten, raw


def _layout(monitored: bool, flatten: bool, raw: NavigationEnv) -> tuple[Any, ...]:
    """What every env of one batch must share."""
    return (type(raw).__name__, raw.width, raw.height, raw.agent_view_size, raw.fully_observed,
            raw.see_through_walls, raw.render_mode, monitored, flatten)
