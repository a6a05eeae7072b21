"""Tests for the ``envs`` package: registration, API checkers, seeding, oracle, observations.

Deterministic (every random draw is seeded) and fast: the whole file runs in well under a
minute on two CPU cores, most of it in the 200-episode oracle runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from minigrid.core.actions import Actions
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX
from minigrid.core.grid import Grid
from minigrid.core.world_object import Wall
from minigrid.minigrid_env import MiniGridEnv
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from envs.__main__ import format_env_table
from envs.mazegen import generate_maze, maze_cells, reachable_cells
from envs.navigation import NavigationEnv
from envs.observation import visibility_mask
from envs.oracle import NoSolutionError
from envs.wrappers import MaskObservationWrapper

# MiniGrid's and classic control's "human" render mode (exercised by gymnasium's checker) opens a
# pygame window; the dummy video driver lets that run headless. SDL reads it when the display
# is first initialised, which happens lazily, so setting it here (after the imports) is enough.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

REPO_ROOT = Path(__file__).resolve().parents[1]
ALL_IDS = [env_id for env_id, _ in envs.list_envs()]
CLASSIC_IDS = [env_id for env_id in ALL_IDS if "NoVel" in env_id]
NAV_IDS = [env_id for env_id in ALL_IDS if env_id not in CLASSIC_IDS]
ORACLE_EPISODES = 200


def _rollout(env: gym.Env, seed: int, actions: list[int]) -> list[tuple]:
    """Reset with ``seed``, apply ``actions`` (re-seeding deterministically after each episode)."""
    obs, info = env.reset(seed=seed)
    trace: list[tuple] = [(obs, info)]
    for t, action in enumerate(actions):
        step = env.step(action)
        trace.append(step)
        if step[2] or step[3]:
            trace.append(env.reset(seed=seed + 1 + t))
    return trace


def _assert_same(a: object, b: object) -> None:
    """Recursive equality for observations/infos (arrays compared exactly)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, (tuple, list)):
        assert isinstance(b, (tuple, list)) and len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


# ---------------------------------------------------------------- registration and listing


def test_catalogue_covers_every_family() -> None:
    assert len(ALL_IDS) == len(set(ALL_IDS))
    for env_id, description in envs.list_envs():
        assert env_id.startswith("CTM/") and env_id in gym.registry
        assert description and "\n" not in description
    for required in (
        "CTM/Maze-7x7-v0",
        "CTM/Maze-21x21-v0",
        "CTM/Maze-11x11-Full-v0",
        "CTM/Memory-L4-v0",
        "CTM/Memory-L32-v0",
        "CTM/KeyDoorMaze-9x9-v0",
        "CTM/ReturnToStart-9x9-v0",
        "CTM/CartPoleNoVel-v1",
        "CTM/AcrobotNoVel-v1",
        "CTM/PendulumNoVel-v1",
    ):
        assert required in ALL_IDS


def test_cli_lists_every_id(capsys: pytest.CaptureFixture[str]) -> None:
    from envs.__main__ import main

    main()
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(ALL_IDS)
    for line, (env_id, description) in zip(lines, envs.list_envs()):
        assert line.split()[0] == env_id and line.endswith(description)
    assert format_env_table([("a", "x"), ("bbb", "y")]) == "a    x\nbbb  y"


def test_fresh_interpreter_module_prefix_and_no_ctm_rl_import() -> None:
    """``gym.make("envs:CTM/...")`` imports the package itself, which must not pull in ctm_rl."""
    code = (
        "import sys, gymnasium as gym\n"
        "gym.make('envs:CTM/Maze-7x7-v0').reset(seed=0)\n"
        "gym.make('envs:CTM/CartPoleNoVel-v1').reset(seed=0)\n"
        "import envs\n"
        "for env_id, _ in envs.list_envs():\n"
        "    gym.make(env_id).reset(seed=0)\n"
        "bad = sorted(m for m in sys.modules if m == 'ctm_rl' or m.startswith('ctm_rl.'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


# ---------------------------------------------------------------- API checkers


def _checked_env(env_id: str) -> gym.Env:
    """The raw environment for navigation ids; the masked classic env (a wrapper by design)."""
    env = gym.make(env_id, render_mode="rgb_array")
    return env if env_id in CLASSIC_IDS else env.unwrapped


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_gymnasium_check_env(env_id: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # warnings are allowed; errors raise
        gym_check_env(_checked_env(env_id))


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_sb3_check_env(env_id: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "image smaller than 36x36 for CnnPolicy"
        sb3_check_env(_checked_env(env_id))


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_render_rgb_array(env_id: str) -> None:
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    env.step(env.action_space.sample())
    frame = env.render()
    assert isinstance(frame, np.ndarray) and frame.dtype == np.uint8
    assert frame.ndim == 3 and frame.shape[2] == 3 and min(frame.shape[:2]) >= 64
    assert frame.std() > 0  # not a blank image
    env.close()


# ---------------------------------------------------------------- seeding


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_same_seed_and_actions_give_same_episode(env_id: str) -> None:
    first, second = gym.make(env_id), gym.make(env_id)
    space = first.action_space
    space.seed(123)
    actions = [space.sample() for _ in range(150)]
    _assert_same(_rollout(first, 7, actions), _rollout(second, 7, actions))


@pytest.mark.parametrize("env_id", [i for i in NAV_IDS if "Memory" not in i])
def test_new_layout_each_episode(env_id: str) -> None:
    env = gym.make(env_id).unwrapped
    layouts = set()
    for seed in range(8):
        env.reset(seed=seed)
        layouts.add((Grid.encode(env.grid).tobytes(), tuple(env.agent_pos)))
    assert len(layouts) == 8


# ---------------------------------------------------------------- oracle


@pytest.mark.parametrize("env_id", NAV_IDS)
def test_oracle_solves_every_episode_in_optimal_steps(env_id: str) -> None:
    env = gym.make(env_id)
    raw = env.unwrapped
    assert isinstance(raw, NavigationEnv)
    for seed in range(ORACLE_EPISODES):
        _, info = env.reset(seed=seed)
        optimal = info["optimal_steps"]
        assert optimal >= 1
        steps, total = 0, 0.0
        while True:
            _, reward, terminated, truncated, info = env.step(raw.optimal_action())
            steps += 1
            total += float(reward)
            if terminated or truncated:
                break
        assert terminated and not truncated and info["is_success"] is True, (env_id, seed)
        assert steps == optimal, (env_id, seed, steps, optimal)
        assert total == pytest.approx(1 - 0.9 * steps / raw.max_steps)
        with pytest.raises(NoSolutionError):
            raw.optimal_action()


@pytest.mark.parametrize(
    "env_id", ["CTM/Maze-11x11-v0", "CTM/KeyDoorMaze-9x9-v0", "CTM/ReturnToStart-9x9-v0"]
)
def test_oracle_recovers_after_off_plan_actions(env_id: str) -> None:
    """After arbitrary actions (drops and toggles included) the oracle still finds a shortest path."""
    env = gym.make(env_id)
    raw = env.unwrapped
    rng = np.random.default_rng(0)
    for seed in range(30):
        env.reset(seed=seed)
        done = False
        for _ in range(int(rng.integers(1, 25))):
            *_, terminated, truncated, _ = env.step(int(rng.integers(7)))
            if terminated or truncated:
                done = True
                break
        if done:
            continue
        to_go = raw.optimal_steps_to_go()
        for taken in range(1, to_go + 1):
            *_, terminated, truncated, info = env.step(raw.optimal_action())
            if terminated or truncated:
                break
        assert terminated and info["is_success"] and taken == to_go


def test_keydoor_solution_uses_key_and_door() -> None:
    env = gym.make("CTM/KeyDoorMaze-9x9-v0")
    raw = env.unwrapped
    for seed in range(20):
        env.reset(seed=seed)
        # The door really separates start and goal: without opening it the goal is unreachable.
        walls = np.zeros((raw.height, raw.width), dtype=bool)
        for x in range(raw.width):
            for y in range(raw.height):
                cell = raw.grid.get(x, y)
                walls[y, x] = cell is not None and cell.type in ("wall", "door")
        goal = raw.oracle_task().waypoints[-1]
        assert goal not in reachable_cells(walls, tuple(raw.agent_pos))
        actions = []
        while True:
            actions.append(raw.optimal_action())
            *_, terminated, truncated, _ = env.step(actions[-1])
            if terminated or truncated:
                break
        assert actions.count(Actions.pickup) == 1 and actions.count(Actions.toggle) == 1
        assert actions.index(Actions.pickup) < actions.index(Actions.toggle)


def test_return_to_start_needs_the_landmark_first() -> None:
    env = gym.make("CTM/ReturnToStart-9x9-v0")
    raw = env.unwrapped
    env.reset(seed=3)
    start = tuple(raw.agent_pos)
    landmark = raw.oracle_task().waypoints[0]
    # Leave and re-enter the start before touching the landmark: no success.
    for _ in range(4):
        front = tuple(raw.front_pos)
        if raw.grid.get(*front) is None and front != landmark:
            break
        env.step(Actions.left)
    env.step(Actions.forward)
    env.step(Actions.left)
    env.step(Actions.left)
    *_, terminated, _, _ = env.step(Actions.forward)
    assert tuple(raw.agent_pos) == start and not terminated
    visited = []
    while True:
        *_, reward, terminated, truncated, info = env.step(raw.optimal_action())
        visited.append(tuple(raw.agent_pos))
        if terminated or truncated:
            break
    assert landmark in visited and visited[-1] == start and info["is_success"] and reward > 0


def test_is_success_false_on_truncation() -> None:
    env = gym.make("CTM/Maze-21x21-v0", max_steps=5)
    env.reset(seed=0)
    for _ in range(5):
        *_, terminated, truncated, info = env.step(Actions.left)  # turning in place never succeeds
    assert truncated and not terminated and info["is_success"] is False


def test_is_success_present_when_an_outer_time_limit_truncates() -> None:
    env = gym.make("CTM/Maze-21x21-v0", max_episode_steps=3)  # gymnasium's TimeLimit, not max_steps
    env.reset(seed=0)
    for _ in range(3):
        *_, terminated, truncated, info = env.step(Actions.left)
    assert truncated and not terminated and info["is_success"] is False


# ---------------------------------------------------------------- memory task


def test_memory_cue_visible_at_step_zero_only() -> None:
    env = gym.make("CTM/Memory-L8-v0")
    raw = env.unwrapped
    arm_cells = {(raw.length + 1, 1), (raw.length + 1, raw.height - 2)}
    rng = np.random.default_rng(1)
    cue_kinds = set()
    for seed in range(40):
        obs, _ = env.reset(seed=seed)
        cue = raw.grid.get(1, 2)
        assert cue is not None and cue.type in ("key", "ball")
        cue_kinds.add(cue.type)
        view = raw.agent_view_size
        # The cue is the cell to the agent's left in the first egocentric observation.
        assert tuple(obs["image"][view // 2 - 1, view - 1]) == cue.encode()
        for _ in range(60):
            obs, _, terminated, truncated, _ = env.step(int(rng.choice([0, 1, 2])))
            # Observations are made from the grid: no key/ball outside the arms means no cue.
            objects = {
                (x, y)
                for x in range(raw.width)
                for y in range(raw.height)
                if (c := raw.grid.get(x, y)) is not None and c.type in ("key", "ball")
            }
            assert objects == arm_cells
            # ... and every key/ball in the observation is one of the arm objects.
            seen = {
                (int(i), int(j))
                for i, j in zip(
                    *np.nonzero(np.isin(obs["image"][..., 0], [OBJECT_TO_IDX["key"], OBJECT_TO_IDX["ball"]]))
                )
            }
            assert seen <= {raw.relative_coords(*cell) for cell in arm_cells}
            if terminated or truncated:
                break
    assert cue_kinds == {"key", "ball"}


def test_memory_arms_reward_only_the_cued_one() -> None:
    env = gym.make("CTM/Memory-L4-v0")
    raw = env.unwrapped
    cued_north = 0
    for seed in range(100):
        env.reset(seed=seed)
        for _ in range(raw.length):
            env.step(Actions.forward)
        success = raw.oracle_task().waypoints[0]
        cued_north += success[1] < raw.height // 2
        turn_to_wrong = Actions.right if success[1] < raw.height // 2 else Actions.left
        env.step(turn_to_wrong)
        _, reward, terminated, _, info = env.step(Actions.forward)
        assert terminated and reward == 0 and info["is_success"] is False
    # Both arms are cued, in roughly equal proportion, so ignoring the cue gives about 50%.
    assert 30 <= cued_north <= 70


def test_memory_length_sets_horizon() -> None:
    for length in (4, 8, 16, 32):
        env = gym.make(f"CTM/Memory-L{length}-v0")
        _, info = env.reset(seed=0)
        assert info["optimal_steps"] == length + 2
    with pytest.raises(ValueError):
        gym.make("CTM/Memory-L4-v0", length=1)


# ---------------------------------------------------------------- observations


@pytest.mark.parametrize(
    "env_id, kwargs",
    [
        ("CTM/Maze-11x11-v0", {}),
        ("CTM/Maze-11x11-v0", {"agent_view_size": 3}),
        ("CTM/Maze-11x11-v0", {"agent_view_size": 9, "see_through_walls": True}),
        ("CTM/Maze-11x11-Full-v0", {}),
        ("CTM/KeyDoorMaze-9x9-v0", {}),
        ("CTM/Memory-L8-v0", {"agent_view_size": 5}),
        ("CTM/ReturnToStart-9x9-v0", {}),
    ],
)
def test_observations_match_minigrid(env_id: str, kwargs: dict) -> None:
    """The fast encoder must produce exactly what MiniGrid's own code (or FullyObsWrapper) would."""
    env = gym.make(env_id, **kwargs)
    raw = env.unwrapped
    view = raw.width if raw.fully_observed else raw.agent_view_size
    assert env.observation_space["image"].shape == (view, raw.height if raw.fully_observed else view, 3)
    assert set(env.observation_space.spaces) == {"image", "direction"}
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    for t in range(400):
        if raw.fully_observed:
            expected = Grid.encode(raw.grid)  # MiniGrid's cell-by-cell encoder, not the cached one
            expected[raw.agent_pos[0], raw.agent_pos[1]] = (
                OBJECT_TO_IDX["agent"],
                COLOR_TO_IDX["red"],
                raw.agent_dir,
            )
        else:
            expected = MiniGridEnv.gen_obs(raw)["image"]
        np.testing.assert_array_equal(obs["image"], expected)
        assert obs["image"].dtype == np.uint8 and obs["direction"] == raw.agent_dir
        # Half oracle, half random (random includes pickup/drop/toggle, changing the grid).
        action = raw.optimal_action() if rng.random() < 0.5 else int(rng.integers(7))
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset(seed=t + 1)


def test_visibility_mask_matches_minigrid_process_vis() -> None:
    rng = np.random.default_rng(0)
    for _ in range(1500):
        size = int(rng.choice([3, 5, 7, 9, 11]))
        opaque = rng.random((size, size)) < rng.random()
        grid = Grid(size, size)
        for i, j in zip(*np.nonzero(opaque)):
            grid.set(int(i), int(j), Wall())
        expected = grid.process_vis((size // 2, size - 1))
        np.testing.assert_array_equal(visibility_mask(opaque)[..., 0].astype(bool), expected)


# ---------------------------------------------------------------- maze generation


@pytest.mark.parametrize("size", [5, 7, 11, 21])
def test_generated_maze_is_perfect(size: int) -> None:
    rng = np.random.default_rng(size)
    for _ in range(10):
        walls = generate_maze(rng, size, size)
        assert walls[0].all() and walls[-1].all() and walls[:, 0].all() and walls[:, -1].all()
        open_cells = {(x, y) for y in range(size) for x in range(size) if not walls[y, x]}
        n = (size - 1) // 2
        # A spanning tree over n*n cells opens exactly n*n - 1 passages, and reaches every cell.
        assert len(open_cells) == 2 * n * n - 1
        assert reachable_cells(walls, maze_cells(size, size)[0]) == open_cells


def test_extra_openings_add_loops_and_bad_sizes_fail() -> None:
    rng = np.random.default_rng(0)
    perfect = generate_maze(rng, 11, 11)
    loopy = generate_maze(rng, 11, 11, extra_openings=0.5)
    assert (~loopy).sum() > (~perfect).sum()
    for bad in (4, 6, 3):
        with pytest.raises(ValueError):
            generate_maze(rng, bad, bad)
    with pytest.raises(ValueError):
        generate_maze(rng, 11, 11, extra_openings=1.5)


# ---------------------------------------------------------------- classic control without velocities


@pytest.mark.parametrize(
    "env_id, base_id, masked",
    [
        ("CTM/CartPoleNoVel-v1", "CartPole-v1", (1, 3)),
        ("CTM/AcrobotNoVel-v1", "Acrobot-v1", (4, 5)),
        ("CTM/PendulumNoVel-v1", "Pendulum-v1", (2,)),
    ],
)
def test_novel_envs_zero_exactly_the_velocities(env_id: str, base_id: str, masked: tuple[int, ...]) -> None:
    env, base = gym.make(env_id), gym.make(base_id)
    assert env.observation_space.shape == base.observation_space.shape
    assert env.spec.max_episode_steps == base.spec.max_episode_steps
    kept = [i for i in range(base.observation_space.shape[0]) if i not in masked]
    obs, _ = env.reset(seed=5)
    ref, _ = base.reset(seed=5)
    env.action_space.seed(5)
    for _ in range(50):
        assert obs in env.observation_space
        assert np.all(obs[list(masked)] == 0)
        np.testing.assert_array_equal(obs[kept], ref[kept])
        action = env.action_space.sample()
        obs, reward, terminated, truncated, _ = env.step(action)
        ref, ref_reward, *_ = base.step(action)
        assert reward == ref_reward
        if terminated or truncated:
            break


def test_cartpole_novel_keeps_500_step_limit() -> None:
    assert gym.spec("CTM/CartPoleNoVel-v1").max_episode_steps == 500


def test_mask_wrapper_validates_indices() -> None:
    base = gym.make("CartPole-v1")
    with pytest.raises(ValueError, match="out of range"):
        MaskObservationWrapper(base, [4])
    with pytest.raises(ValueError, match="out of range"):
        MaskObservationWrapper(base, [-1])
    with pytest.raises(ValueError, match="duplicates"):
        MaskObservationWrapper(base, [1, 1])
    with pytest.raises(ValueError, match="at least one"):
        MaskObservationWrapper(base, [])
    with pytest.raises(TypeError, match="integers"):
        MaskObservationWrapper(base, [1.0])
    with pytest.raises(TypeError, match="1-D Box"):
        MaskObservationWrapper(gym.make("CTM/Maze-7x7-v0"), [0])
    wrapped = MaskObservationWrapper(base, (0, 2), fill_value=0.5)
    obs, _ = wrapped.reset(seed=0)
    assert obs.shape == (4,) and obs[0] == 0.5 and obs[2] == 0.5 and obs in wrapped.observation_space
