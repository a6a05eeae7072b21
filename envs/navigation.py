"""Common base class of the grid navigation environments (maze, memory, sub-goal).

It adds to :class:`minigrid.minigrid_env.MiniGridEnv` what every navigation task here shares:

* a task written as waypoints and forbidden cells (:class:`envs.oracle.Task`), which decides
  success, failure and reward, so the environment and the oracle cannot disagree about it;
* ``optimal_action()`` and ``info["optimal_steps"]`` from the shared shortest-path oracle;
* ``info["is_success"]`` in every step's info, so it is in the final step's info however the
  episode ends (Stable-Baselines3's convention), even when an outer ``TimeLimit`` truncates it;
* an optional fully observed view in the same symbolic ``(H, W, 3)`` encoding.

Observations are ``{"image": uint8 (view, view, 3), "direction": Discrete(4)}``: MiniGrid's
dict without the ``"mission"`` text. The mission is fixed per environment (so it carries no
information) and Stable-Baselines3 cannot batch text spaces; dropping it lets the raw
environment pass SB3's checker and feed ``MultiInputPolicy``, while MiniGrid wrappers that only
touch ``"image"`` (``ImgObsWrapper``, ``RGBImgPartialObsWrapper``...) keep working. The text is
still available as ``env.unwrapped.mission``.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.core import ActType, ObsType
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX
from minigrid.core.mission import MissionSpace
from minigrid.minigrid_env import MiniGridEnv

from envs.observation import EncodedGrid, egocentric_view
from envs.oracle import Pos, ShortestPathOracle, Task


class NavigationEnv(MiniGridEnv):
    """MiniGrid environment whose task is "enter these cells in order", with an oracle.

    Subclasses implement ``_gen_grid``: build ``self.grid`` as an
    :class:`envs.observation.EncodedGrid` (observations are read from its encoding), place the
    agent, and call :meth:`_set_task`. Reward follows MiniGrid: ``1 - 0.9 * step_count / max_steps`` when
    the final waypoint is entered, 0 otherwise (including failures and timeouts).

    Args:
        width: grid width, outer wall included.
        height: grid height, outer wall included.
        max_steps: episode length after which the episode is truncated.
        agent_view_size: side of the egocentric partial view (odd, >= 3).
        fully_observed: observe the whole grid (agent cell marked as MiniGrid's
            ``FullyObsWrapper`` does) instead of the egocentric view.
        render_mode: ``None``, ``"rgb_array"`` or ``"human"``.
        **kwargs: passed on to :class:`MiniGridEnv` (``tile_size``, ``highlight``...).
    """

    def __init__(
        self,
        *,
        width: int,
        height: int,
        max_steps: int,
        agent_view_size: int = 7,
        fully_observed: bool = False,
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        # The partial-view highlight in renders would be misleading when the agent sees everything.
        kwargs.setdefault("highlight", not fully_observed)
        super().__init__(
            mission_space=MissionSpace(mission_func=self._gen_mission),
            width=width,
            height=height,
            max_steps=int(max_steps),
            agent_view_size=agent_view_size,
            render_mode=render_mode,
            **kwargs,
        )
        self.fully_observed = fully_observed
        view = (width, height) if fully_observed else (agent_view_size, agent_view_size)
        self.observation_space = spaces.Dict(
            {
                "image": spaces.Box(low=0, high=255, shape=(*view, 3), dtype=np.uint8),
                "direction": spaces.Discrete(4),
            }
        )
        self._oracle = ShortestPathOracle()
        self._task = Task(waypoints=())
        self._success = False

    @staticmethod
    @abstractmethod
    def _gen_mission() -> str:
        """The (constant) mission text of the environment."""

    def _set_task(self, waypoints: tuple[Pos, ...], forbidden: frozenset[Pos] = frozenset()) -> None:
        """Declare this episode's task; call from ``_gen_grid``."""
        if not waypoints:
            raise ValueError("a navigation task needs at least one waypoint")
        self._task = Task(
            waypoints=tuple((int(x), int(y)) for x, y in waypoints),
            reached=0,
            forbidden=frozenset((int(x), int(y)) for x, y in forbidden),
        )

    def oracle_task(self) -> Task:
        """The current task and progress (read by :class:`envs.oracle.ShortestPathOracle`)."""
        return self._task

    def optimal_action(self) -> int:
        """The next action of a shortest solution from the current state.

        Raises:
            envs.oracle.NoSolutionError: when the episode is already over.
        """
        return self._oracle.next_action(self)

    def optimal_steps_to_go(self) -> int:
        """Number of actions a shortest solution still needs from the current state."""
        return self._oracle.steps_to_go(self)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsType, dict[str, Any]]:
        """Generate a new episode; ``info["optimal_steps"]`` is its shortest solution length."""
        self._success = False
        obs, info = super().reset(seed=seed, options=options)
        info["optimal_steps"] = self._oracle.steps_to_go(self)
        return obs, info

    def step(self, action: ActType) -> tuple[ObsType, SupportsFloat, bool, bool, dict[str, Any]]:
        """MiniGrid's step, with success/failure/reward decided by the task's waypoints."""
        before = (int(self.agent_pos[0]), int(self.agent_pos[1]))
        # MiniGrid's own reward (from stepping on a goal square) is discarded: the task decides.
        obs, _, terminated, truncated, info = super().step(action)
        reward = 0.0
        pos = (int(self.agent_pos[0]), int(self.agent_pos[1]))
        task = self._task
        if pos != before:
            if pos in task.forbidden:
                terminated = True
            elif task.reached < len(task.waypoints) and pos == task.waypoints[task.reached]:
                self._task = task = Task(task.waypoints, task.reached + 1, task.forbidden)
                if task.reached == len(task.waypoints):
                    terminated = True
                    self._success = True
                    reward = self._reward()
        # On every step, not only the last: an outer TimeLimit (gym.make(max_episode_steps=...))
        # can end the episode without this env knowing, and SB3 reads the final step's info.
        info["is_success"] = self._success
        return obs, reward, terminated, truncated, info

    def gen_obs(self) -> dict[str, Any]:
        """Symbolic observation: egocentric view, or the whole grid if ``fully_observed``.

        Identical to MiniGrid's ``gen_obs()["image"]`` (or ``FullyObsWrapper``'s), computed
        from the grid's incrementally maintained encoding (see :mod:`envs.observation`).
        """
        if not isinstance(self.grid, EncodedGrid):
            raise TypeError(f"{type(self).__name__}._gen_grid must build an envs.observation.EncodedGrid")
        codes = self.grid.codes()
        if self.fully_observed:
            image = codes.copy()
            # Same marking as minigrid.wrappers.FullyObsWrapper, so either can feed a backbone.
            image[self.agent_pos[0], self.agent_pos[1]] = (
                OBJECT_TO_IDX["agent"],
                COLOR_TO_IDX["red"],
                self.agent_dir,
            )
        else:
            image = egocentric_view(
                codes,
                self.get_view_exts()[:2],
                self.agent_dir,
                self.agent_view_size,
                self.carrying,
                self.see_through_walls,
            )
        return {"image": image, "direction": int(self.agent_dir)}


def play_episode(env: gym.Env, seed: int, rng: np.random.Generator | None = None) -> tuple[float, int, bool]:
    """One episode of the navigation env ``env`` (wrappers allowed) from ``reset(seed=seed)``, acting with
    the shortest-path oracle (``rng is None``) or uniformly at random; ``(return, length, success)``."""
    raw = env.unwrapped
    if not isinstance(raw, NavigationEnv):
        raise TypeError(f"{type(raw).__name__} is not a NavigationEnv: it has no oracle")
    env.reset(seed=seed)
    total, steps = 0.0, 0
    while True:
        action = raw.optimal_action() if rng is None else int(rng.integers(env.action_space.n))
        _, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        steps += 1
        if terminated or truncated:
            return total, steps, bool(info["is_success"])


def oracle_mean_return(env_id: str, episodes: int = 50) -> float | None:
    """The shortest-path oracle's mean return over seeds ``0 .. episodes-1`` of ``env_id``: the best mean
    return an agent can get there (a ceiling for learning curves); ``None`` if the env has no oracle."""
    env = gym.make(env_id)
    try:
        if not isinstance(env.unwrapped, NavigationEnv):
            return None
        return float(np.mean([play_episode(env, seed)[0] for seed in range(episodes)]))
    finally:
        env.close()
