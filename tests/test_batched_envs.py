"""Tests for :class:`envs.batched.BatchedGridVecEnv`: the same trajectories as ``DummyVecEnv``, for every grid id.

Each comparison builds both vector envs with ``make_vec_env`` from the same factory and seed, drives
them with the same actions (seeded random ones mixed with the shortest-path oracle's, read from the
reference envs, so that pickups, doors and successes happen), and requires everything SB3 sees to be
equal: observations, rewards, dones, infos (``terminal_observation`` included; Monitor's wall-clock
``t`` aside) and ``reset_infos``. Deterministic and fast (about 15 s on two shared cores).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.wrappers import FlattenObservation
from minigrid.core.actions import Actions
from minigrid.core.world_object import Door
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecFrameStack

import envs
from agents import build_model, get_agent, make_env
from ctm_rl.config import ExperimentConfig, build_dataclass
from ctm_rl.errors import ConfigError
from ctm_rl.evaluation import FrameRecorder, evaluate
from envs.batched import BatchedGridVecEnv, UnsupportedEnvError

GRID_IDS = [env_id for env_id, _ in envs.list_envs() if "NoVel" not in env_id]


def _assert_same(a: Any, b: Any, where: str = "") -> None:
    """Exact recursive equality, types included (arrays: dtype, shape and values)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (where, a.keys(), b)
        for key in a:
            _assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{k}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and (a.dtype, a.shape) == (b.dtype, b.shape), (where, a.dtype, b.dtype)
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert type(a) is type(b) and a == b, (where, a, b)


def _pair(make: Callable[[], gym.Env], n_envs: int, seed: int) -> tuple[VecEnv, BatchedGridVecEnv]:
    """The reference ``DummyVecEnv`` and the batched env, built as ``agents.make_env`` builds them."""
    return (make_vec_env(make, n_envs=n_envs, seed=seed, vec_env_cls=DummyVecEnv),
            make_vec_env(make, n_envs=n_envs, seed=seed, vec_env_cls=BatchedGridVecEnv))


def _without_time(infos: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``infos`` without Monitor's ``episode["t"]`` (wall-clock time since the Monitor was made), checked there."""
    for info in infos:
        if "episode" in info:
            assert isinstance(info["episode"].pop("t"), float)
    return infos


def _actions(ref: VecEnv, rng: np.random.Generator, oracle_share: float) -> np.ndarray:
    """One action per env: the reference env's oracle action with probability ``oracle_share``, else a random
    one, half the time a move or turn (so that random stretches get somewhere, e.g. into a wrong T-maze arm)."""
    return np.array([ref.envs[i].unwrapped.optimal_action() if rng.random() < oracle_share
                     else int(rng.integers(3 if rng.random() < 0.5 else len(Actions)))
                     for i in range(ref.num_envs)])


def _events(ref: VecEnv, actions: np.ndarray) -> Counter:
    """What the actions are about to do in the reference envs (to check the comparison covers it)."""
    events: Counter = Counter()
    for env, action in zip(ref.envs, actions.tolist()):
        raw = env.unwrapped
        front = raw.grid.get(*raw.front_pos)
        if action == Actions.pickup and raw.carrying is None and front is not None and front.can_pickup():
            events["pickup"] += 1
        elif action == Actions.drop and raw.carrying is not None and front is None:
            events["drop"] += 1
        elif action == Actions.toggle and isinstance(front, Door):
            events["close" if front.is_open else "open" if not front.is_locked or raw.carrying else "locked"] += 1
    return events


def _compare(make: Callable[[], gym.Env], steps: int, n_envs: int = 4, seed: int = 0,
             oracle_share: float = 0.6) -> Counter:
    """Step both vector envs with the same actions and assert that everything they return is equal."""
    ref, batched = _pair(make, n_envs, seed)
    _assert_same(ref.reset(), batched.reset(), "reset")
    _assert_same(ref.reset_infos, batched.reset_infos, "reset_infos")
    rng = np.random.default_rng(seed)
    seen: Counter = Counter()
    for t in range(steps):
        actions = _actions(ref, rng, oracle_share)
        seen += _events(ref, actions)
        expected, got = ref.step(actions), batched.step(actions)
        for name, a, b in zip(("obs", "rewards", "dones"), expected[:3], got[:3]):
            _assert_same(a, b, f"step {t} {name}")
        _assert_same(_without_time(expected[3]), _without_time(got[3]), f"step {t} infos")
        _assert_same(ref.reset_infos, batched.reset_infos, f"step {t} reset_infos")
        for info, done in zip(expected[3], expected[2]):
            if done:
                seen["success" if info["is_success"] else "truncated" if info["TimeLimit.truncated"]
                     else "failure"] += 1
    return seen


# Per id: a time limit (half through gym.make's TimeLimit, half through MiniGrid's own max_steps) short
# enough for several episodes, long enough for the oracle-led agent to succeed; the steps to run; the share
# of oracle actions; the outcomes and actions the run is checked to have covered.
_ENDINGS = ("success", "truncated")
_CASES: dict[str, tuple[int, int, float, tuple[str, ...]]] = {
    "Maze-7x7": (16, 60, 0.6, _ENDINGS),
    "Maze-11x11": (40, 120, 0.6, _ENDINGS),
    "Maze-15x15": (70, 160, 0.6, _ENDINGS),
    "Maze-21x21": (100, 220, 0.6, _ENDINGS),
    "Memory-L4": (18, 60, 0.7, (*_ENDINGS, "failure")),  # failure: the wrong arm entered
    "Memory-L8": (30, 80, 0.7, (*_ENDINGS, "failure")),
    "Memory-L16": (36, 100, 0.7, _ENDINGS),
    "Memory-L32": (40, 160, 0.8, _ENDINGS),
    "KeyDoorMaze-9x9": (60, 200, 0.6, (*_ENDINGS, "pickup", "drop", "open", "close")),
    "KeyDoorMaze-15x15": (120, 320, 0.6, (*_ENDINGS, "pickup", "drop", "open")),
    "ReturnToStart-9x9": (50, 140, 0.6, _ENDINGS),
    "ReturnToStart-15x15": (110, 250, 0.6, _ENDINGS),
}


@pytest.mark.parametrize("env_id", GRID_IDS)
def test_same_trajectories_as_dummy_vec_env(env_id: str) -> None:
    limit, steps, oracle_share, covered = _CASES[env_id.removeprefix("CTM/").removesuffix("-v0")
                                                 .removesuffix("-Full")]
    through_time_limit = GRID_IDS.index(env_id) % 2 == 0
    flatten = GRID_IDS.index(env_id) % 3 == 0  # what agents.make_env adds for the non-CTM agents

    def make() -> gym.Env:
        env = (gym.make(env_id, max_episode_steps=limit) if through_time_limit
               else gym.make(env_id, max_steps=limit))
        return FlattenObservation(env) if flatten else env

    seen = _compare(make, steps, oracle_share=oracle_share)
    assert all(seen[event] for event in covered), seen


@pytest.mark.parametrize("kwargs", [{"agent_view_size": 3}, {"agent_view_size": 5}, {"agent_view_size": 9},
                                    {"see_through_walls": True}, {"agent_view_size": 11, "see_through_walls": True}])
def test_same_trajectories_with_other_views(kwargs: dict[str, Any]) -> None:
    # A key-door maze: its doors are the occluders that change during an episode.
    seen = _compare(lambda: gym.make("CTM/KeyDoorMaze-9x9-v0", max_episode_steps=60, **kwargs), steps=100)
    assert seen["open"] and seen["success"], seen


def test_flattened_observations_are_flatten_observations() -> None:
    def make(flatten: bool) -> Callable[[], gym.Env]:
        return lambda: (FlattenObservation if flatten else lambda env: env)(gym.make("CTM/Memory-L4-v0"))

    flat = make_vec_env(make(True), n_envs=3, seed=1, vec_env_cls=BatchedGridVecEnv)
    plain = make_vec_env(make(False), n_envs=3, seed=1, vec_env_cls=BatchedGridVecEnv)
    dict_space = plain.observation_space
    assert flat.observation_space == spaces.flatten_space(dict_space)
    observations = (flat.reset(), plain.reset())
    rng = np.random.default_rng(0)
    for _ in range(40):
        expected = np.stack([spaces.flatten(dict_space, {key: value[i] for key, value in observations[1].items()})
                             for i in range(3)])
        _assert_same(expected, observations[0])  # int64, one-hot direction first (gymnasium sorts the keys)
        actions = rng.integers(3, size=3)
        observations = (flat.step(actions)[0], plain.step(actions)[0])


def test_render_and_attributes_follow_the_batched_state() -> None:
    def make() -> gym.Env:
        return gym.make("CTM/KeyDoorMaze-9x9-v0", max_episode_steps=50, render_mode="rgb_array")

    ref, batched = _pair(make, n_envs=2, seed=3)
    ref.reset(), batched.reset()
    assert batched.render_mode == "rgb_array" and batched.env_is_wrapped(Monitor) == [True, True]
    rng = np.random.default_rng(3)
    for t in range(70):
        if t % 7 == 0:
            _assert_same(ref.get_images(), list(batched.get_images()), f"frames at step {t}")
            _assert_same(ref.render(), batched.render(), f"tiled frame at step {t}")
        # The oracle reads the synced instance: grid, carried key, doors and task progress must all match.
        assert batched.env_method("optimal_action") == [env.unwrapped.optimal_action() for env in ref.envs]
        assert batched.get_attr("step_count") == ref.get_attr("step_count")
        actions = _actions(ref, rng, 0.6)
        ref.step(actions), batched.step(actions)

    # set_attr reaches the env and is read back: a smaller MiniGrid limit truncates the episode now.
    batched.set_attr("max_steps", 1)
    _, _, dones, infos = batched.step(np.array([Actions.left, Actions.left]))
    assert dones.all() and all(info["TimeLimit.truncated"] for info in infos)


def test_reset_seeds_and_bad_actions() -> None:
    ref, batched = _pair(lambda: gym.make("CTM/Maze-7x7-v0"), n_envs=2, seed=0)
    for venv in (ref, batched):
        venv.reset()
        venv.seed(42)  # as evaluation does: applies to the next reset only
    _assert_same(ref.reset(), batched.reset())
    _assert_same(ref.reset_infos, batched.reset_infos)
    assert batched.action_space is batched.envs[0].action_space  # seeded with seed + rank, as in DummyVecEnv
    for bad in ([0, 7], [-1, 0], [0.5, 1.0]):
        with pytest.raises(ValueError, match="Unknown action"):
            batched.step(np.array(bad))


def test_unsupported_envs_are_refused() -> None:
    with pytest.raises(UnsupportedEnvError, match="CartPoleEnv is not a grid env"):
        make_vec_env(lambda: gym.make("CartPole-v1"), n_envs=1, vec_env_cls=BatchedGridVecEnv)
    with pytest.raises(UnsupportedEnvError, match="wrapper ImgObsWrapper is not supported"):
        from minigrid.wrappers import ImgObsWrapper

        make_vec_env(lambda: ImgObsWrapper(gym.make("CTM/Maze-7x7-v0")), n_envs=1, vec_env_cls=BatchedGridVecEnv)
    with pytest.raises(UnsupportedEnvError, match="agent_view_size 11"):
        make_vec_env(lambda: gym.make("CTM/Maze-11x11-v0", agent_view_size=11), n_envs=1,
                     vec_env_cls=BatchedGridVecEnv)


def _config(agent: str, env_id: str = "CTM/Memory-L4-v0", **env: Any) -> ExperimentConfig:
    return build_dataclass(ExperimentConfig, {"agent": agent, "env": {"id": env_id, "vec_env": "batched", **env},
                                              "device": "cpu"})


def test_make_env_builds_the_batched_env_for_every_agent() -> None:
    ctm = make_env(_config("ctm", n_envs=3, max_episode_steps=9), get_agent("ctm"), n_envs=3, seed=0,
                   training=True)
    assert isinstance(ctm, BatchedGridVecEnv) and isinstance(ctm.observation_space, spaces.Dict)
    assert ctm.get_attr("spec")[0].max_episode_steps == 9  # config.max_episode_steps, as gym.make applies it
    mlp = make_env(_config("mlp"), get_agent("mlp"), n_envs=2, seed=0, training=False)
    assert isinstance(mlp, BatchedGridVecEnv) and mlp.observation_space.shape == (4 + 7 * 7 * 3,)
    stacked = make_env(_config("framestack"), get_agent("framestack"), n_envs=2, seed=0, training=True)
    assert isinstance(stacked, VecFrameStack) and isinstance(stacked.venv, BatchedGridVecEnv)


def test_a_batched_config_evaluates_and_films_as_a_dummy_one() -> None:
    """``ctm-rl eval`` (and its ``--video``) on a run trained with ``vec_env: batched`` sees the same episodes."""
    outcomes = []
    model = None
    for vec_env in ("dummy", "batched"):
        config = _config("mlp", max_episode_steps=12)
        config.env.vec_env = vec_env
        env = make_env(config, get_agent("mlp"), n_envs=1, seed=5, training=False, render_mode="rgb_array")
        model = model or build_model(config, env)[0]  # one policy for both
        recorder = FrameRecorder(env)
        result = evaluate(model, recorder, n_episodes=3, seed=5)
        outcomes.append((result.returns, result.lengths, result.successes, recorder.frames))
    _assert_same(*outcomes)
    assert outcomes[0][3]  # frames were filmed


@pytest.mark.parametrize("env, message", [
    ({"id": "CTM/CartPoleNoVel-v1"}, "cannot step 'CTM/CartPoleNoVel-v1': CartPoleEnv is not a grid env"),
    ({"wrappers": ["minigrid.wrappers.ImgObsWrapper"]}, "cannot apply env.wrappers"),
    ({"env_kwargs": {"agent_view_size": 11}}, "agent_view_size 11 is wider"),
])
def test_what_the_batched_env_cannot_step_is_a_config_error(env: dict[str, Any], message: str) -> None:
    config = _config("ctm", **env)
    with pytest.raises(ConfigError, match=message) as error:
        make_env(config, get_agent("ctm"), n_envs=2, seed=0, training=True)
    assert "\n" not in str(error.value) and "vec_env: dummy" in str(error.value)
