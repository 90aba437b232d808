"""Tests for the D4RL maze2d port: registration, dynamics, rewards, scores, waypoint controller, data generation."""

from __future__ import annotations

import importlib
import warnings

import gymnasium as gym
import h5py
import numpy as np
import pytest

import diffuser.envs
from diffuser.data.d4rl import find_dataset, load_d4rl
from diffuser.envs import MAZE2D_SPECS, Maze2dEnv, make_env, normalized_score
from diffuser.envs.maze2d import EMPTY, GOAL, LARGE_MAZE, MEDIUM_MAZE, OPEN, U_MAZE, WALL, parse_maze
from diffuser.envs.waypoint_controller import WaypointController
from diffuser.data.maze2d_generation import default_output_path, generate_maze2d, rollout
from diffuser.tools.maze2d_generate import main

FIXED_TARGETS = {
    "umaze": (1, 1), "medium": (6, 6), "large": (7, 9),
    "eval-umaze": (1, 3), "eval-medium": (1, 6), "eval-large": (1, 9),
}
EPISODE_STEPS = {"umaze": 300, "medium": 600, "large": 800}


def _stem(name: str) -> str:
    """'maze2d-eval-umaze-dense-v1' -> 'eval-umaze'."""
    return name[len("maze2d-"):].rsplit("-v1", 1)[0].replace("-dense", "")


# ------------------------------------------------------------------ registration and specs
def test_twelve_v1_ids_with_exact_reference_scores():
    assert len(MAZE2D_SPECS) == 12
    for stem in FIXED_TARGETS:
        assert f"maze2d-{stem}-v1" in MAZE2D_SPECS and f"maze2d-{stem}-dense-v1" in MAZE2D_SPECS
    s = MAZE2D_SPECS
    assert (s["maze2d-umaze-v1"].ref_min_score, s["maze2d-umaze-v1"].ref_max_score) == (23.85, 161.86)
    assert (s["maze2d-medium-v1"].ref_min_score, s["maze2d-medium-v1"].ref_max_score) == (13.13, 277.39)
    assert (s["maze2d-large-v1"].ref_min_score, s["maze2d-large-v1"].ref_max_score) == (6.7, 273.99)
    assert (s["maze2d-eval-large-v1"].ref_min_score, s["maze2d-eval-large-v1"].ref_max_score) == (16.4, 302.22)
    assert s["maze2d-large-dense-v1"].ref_max_score == 303.4857382709002
    assert s["maze2d-eval-umaze-dense-v1"].ref_min_score == 56.95455
    assert s["maze2d-eval-medium-dense-v1"].ref_max_score == 235.5658957482388


@pytest.mark.parametrize("name", sorted(MAZE2D_SPECS))
def test_gym_make_every_registered_id(name):
    spec = MAZE2D_SPECS[name]
    env = gym.make(name)
    assert env.spec.max_episode_steps == spec.max_episode_steps
    assert spec.max_episode_steps == EPISODE_STEPS[_stem(name).replace("eval-", "")]
    base = env.unwrapped
    assert isinstance(base, Maze2dEnv)
    assert base.reward_type == ("dense" if "dense" in name else "sparse")
    assert base.layout == spec.layout
    np.testing.assert_array_equal(base.target, FIXED_TARGETS[_stem(name)])  # the 'G' cell, no noise
    assert base.maze_arr[FIXED_TARGETS[_stem(name)]] == GOAL
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4,)
    env.close()


def test_importing_twice_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.reload(diffuser.envs)
        importlib.reload(diffuser.envs)
    assert "maze2d-umaze-v1" in gym.registry


def test_unknown_name_raises_listing_known_names():
    with pytest.raises(ValueError, match="maze2d-umaze-v1"):
        make_env("maze2d-tiny-v1")
    with pytest.raises(ValueError, match="known names"):
        normalized_score("hopper-medium-v9", 1.0)


def test_parse_maze_layouts():
    grid = parse_maze(U_MAZE)
    assert grid.shape == (5, 5)
    assert grid[1, 1] == GOAL and grid[1, 2] == EMPTY and grid[2, 1] == WALL
    assert parse_maze(MEDIUM_MAZE).shape == (8, 8) and parse_maze(LARGE_MAZE).shape == (9, 12)
    np.testing.assert_array_equal(parse_maze(U_MAZE.replace("\\", "\n")), grid)
    with pytest.raises(ValueError):
        parse_maze("#X#")


# ------------------------------------------------------------------------------ dynamics
def test_reset_and_step_shapes_dtypes_and_time_limit():
    env = gym.make("maze2d-umaze-v1")
    obs, info = env.reset(seed=3)
    assert obs.shape == (4,) and obs.dtype in (np.float32, np.float64) and env.observation_space.contains(obs)
    assert env.action_space.shape == (2,)
    np.testing.assert_array_equal(env.action_space.low, [-1, -1])
    np.testing.assert_array_equal(env.action_space.high, [1, 1])
    cell = np.round(obs[:2])
    assert np.all(np.abs(obs[:2] - cell) <= 0.1) and env.unwrapped.maze_arr[tuple(cell.astype(int))] != WALL
    for t in range(300):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert obs.shape == (4,) and isinstance(reward, float) and terminated is False
        assert truncated == (t == 299)


def test_reset_is_seeded():
    env_a, env_b = gym.make("maze2d-medium-v1"), gym.make("maze2d-medium-v1")
    np.testing.assert_array_equal(env_a.reset(seed=7)[0], env_b.reset(seed=7)[0])
    assert not np.array_equal(env_a.reset(seed=7)[0], env_b.reset(seed=8)[0])
    np.testing.assert_array_equal(make_env("maze2d-medium-v1", seed=7).reset()[0], env_a.reset(seed=7)[0])


def test_action_and_velocity_clipping():
    results = []
    for action, qvel in (([5.0, -7.0], [0.3, 0.0]), ([1.0, -1.0], [0.3, 0.0]), ([1.0, -1.0], [0.3, 0.0])):
        env = Maze2dEnv(U_MAZE)
        env.set_state(np.array([3.0, 2.0]), np.array(qvel))
        results.append(env.step(np.array(action))[0])
    np.testing.assert_array_equal(results[0], results[1])
    fast, capped = Maze2dEnv(U_MAZE), Maze2dEnv(U_MAZE)
    fast.set_state(np.array([3.0, 2.0]), np.array([40.0, -9.0]))
    capped.set_state(np.array([3.0, 2.0]), np.array([5.0, -5.0]))
    np.testing.assert_array_equal(fast.step(np.zeros(2))[0], capped.step(np.zeros(2))[0])


@pytest.mark.parametrize(
    "action, axis, bound",
    [([-1.0, 0.0], 0, 0.403), ([1.0, 0.0], 0, 1.197), ([0.0, -1.0], 1, 0.403), ([0.0, 1.0], 1, 3.197)],
)
def test_walls_block_motion(action, axis, bound):
    """Pushing from cell (1, 1) for 200 steps: the ball may dent the wall at speed (soft contact) but never passes
    it, and once settled it rests inside the free space [r - 0.6, r + 0.2] of its cell."""
    env = Maze2dEnv(U_MAZE)
    env.set_state(np.array([1.0, 1.0]), np.zeros(2))
    path = np.array([env.step(np.array(action))[0] for _ in range(200)])
    rest_cell = np.array([1.0, 3.0 if action[1] > 0 else 1.0])
    assert np.all(path[:, 0] > 0.3) and np.all(path[:, 0] < 1.3)  # row 0 and row 2 are walls along the way
    assert np.all(path[:, 1] > 0.3) and np.all(path[:, 1] < 3.3)
    settled = path[-100:, :2]
    assert np.all(settled >= rest_cell - 0.6) and np.all(settled <= rest_cell + 0.2), settled[-1]
    assert abs(path[-1, axis] - bound) < 0.01, path[-1]
    assert np.all(np.abs(path[-1, 2:]) < 1e-6)  # at rest against the wall


# ------------------------------------------------------------------------- rewards, scores
def test_sparse_and_dense_rewards():
    sparse, dense = Maze2dEnv(U_MAZE, "sparse"), Maze2dEnv(U_MAZE, "dense")
    for env in (sparse, dense):
        env.set_state(np.array([1.0, 1.0]), np.zeros(2))
    assert sparse.step(np.zeros(2))[1] == 1.0
    obs, reward = dense.step(np.zeros(2))[:2]
    assert reward == pytest.approx(np.exp(-np.linalg.norm(obs[:2] - dense.target)))
    sparse.set_state(np.array([3.0, 1.0]), np.zeros(2))
    dense.set_state(np.array([3.0, 1.0]), np.zeros(2))
    assert sparse.step(np.zeros(2))[1] == 0.0
    obs, reward = dense.step(np.zeros(2))[:2]
    assert reward == pytest.approx(np.exp(-np.linalg.norm(obs[:2] - np.array([1.0, 1.0]))))
    assert reward < np.exp(-1.9)


@pytest.mark.parametrize("name", ["maze2d-umaze-v1", "maze2d-large-dense-v1", "maze2d-eval-medium-v1"])
def test_normalized_score_is_a_fraction(name):
    spec = MAZE2D_SPECS[name]
    env = gym.make(name).unwrapped
    assert env.get_normalized_score(spec.ref_min_score) == pytest.approx(0.0, abs=1e-12)
    assert env.get_normalized_score(spec.ref_max_score) == pytest.approx(1.0)
    mid = (spec.ref_min_score + spec.ref_max_score) / 2
    assert normalized_score(name, mid) == pytest.approx(0.5)
    assert normalized_score(name, spec.ref_max_score) == pytest.approx(1.0)


def test_set_state_and_set_target_round_trip():
    env = Maze2dEnv(MEDIUM_MAZE)
    env.reset(seed=0)
    env.set_state(np.array([2.1, 3.05]), np.array([0.5, -0.25]))
    np.testing.assert_array_equal(env._get_obs(), [2.1, 3.05, 0.5, -0.25])
    env.set_target(np.array([4.0, 5.0]))
    np.testing.assert_array_equal(env.target, [4.0, 5.0])
    np.testing.assert_array_equal(env.get_target(), [4.0, 5.0])
    for _ in range(20):
        env.set_target()
        cell = np.round(env.target).astype(int)
        assert env.maze_arr[tuple(cell)] in (EMPTY, GOAL) and np.all(np.abs(env.target - cell) <= 0.1)


# ---------------------------------------------------------------------------- controller
def test_controller_grid_path_follows_the_u():
    controller = WaypointController(U_MAZE, rng=np.random.default_rng(0))
    controller.get_action(np.array([3.0, 1.0]), np.zeros(2), np.array([1.04, 0.97]))
    waypoints = controller.waypoints
    np.testing.assert_array_equal(np.ceil(waypoints - 1e-9), [[3, 2], [3, 3], [2, 3], [1, 3], [1, 2], [1, 1]])
    np.testing.assert_array_equal(waypoints[-1], [1.0, 1.0])  # final waypoint: the exact target cell
    jitter = np.ceil(waypoints[:-1] - 1e-9) - waypoints[:-1]
    assert np.all((jitter >= 0) & (jitter <= 0.2)) and np.all(jitter > 0)


def test_controller_breaks_ties_like_argmax():
    """In the open maze two moves tie; np.argmax picks the lower action index, DOWN (column + 1) before RIGHT."""
    controller = WaypointController(OPEN, rng=np.random.default_rng(0))
    controller.get_action(np.array([1.0, 1.0]), np.zeros(2), np.array([3.0, 5.0]))
    cells = np.ceil(controller.waypoints - 1e-9)
    np.testing.assert_array_equal(cells, [[1, 2], [1, 3], [1, 4], [1, 5], [2, 5], [3, 5]])


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_controller_reaches_random_target_in_umaze(seed):
    env = Maze2dEnv(U_MAZE)
    obs, _ = env.reset(seed=seed)
    env.set_target()
    controller = WaypointController(U_MAZE, rng=np.random.default_rng(seed))
    cell = np.round(env.target)
    for _ in range(300):
        action, solved = controller.get_action(obs[:2], obs[2:], env.target)
        assert np.all(np.abs(action) <= 1.0)
        if solved:
            break
        obs = env.step(action)[0]
    assert solved and np.linalg.norm(obs[:2] - cell) < 0.1


# ------------------------------------------------------------------------ data generation
@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("maze2d")
    paths = {
        "a": generate_maze2d("maze2d-umaze-v1", 3000, seed=0, path=root / "a.hdf5"),
        "b": generate_maze2d("maze2d-umaze-v1", 3000, seed=0, path=root / "b.hdf5"),
        "c": generate_maze2d("maze2d-umaze-v1", 3000, seed=1, path=root / "c.hdf5"),
    }
    return paths


def test_generated_keys_shapes_dtypes(small_dataset):
    with h5py.File(small_dataset["a"], "r") as f:
        shapes = {k: (f[k].shape, f[k].dtype) for k in
                  ("observations", "actions", "rewards", "terminals", "timeouts",
                   "infos/goal", "infos/qpos", "infos/qvel")}
        attrs = dict(f.attrs)
    n = 3000
    assert shapes["observations"] == ((n, 4), np.float32)
    assert shapes["actions"] == ((n, 2), np.float32)
    assert shapes["rewards"] == ((n,), np.float32)
    assert shapes["terminals"] == ((n,), np.bool_) and shapes["timeouts"] == ((n,), np.bool_)
    for key in ("infos/goal", "infos/qpos", "infos/qvel"):
        assert shapes[key] == ((n, 2), np.float32)
    assert attrs["env_name"] == "maze2d-umaze-v1" and attrs["seed"] == 0 and attrs["num_samples"] == n
    assert bool(attrs["noisy"]) and attrs["generator"] == "diffuser.tools.maze2d_generate"


def test_generated_goal_switches_and_repeated_observation(small_dataset):
    d = load_d4rl(small_dataset["a"])
    obs, qpos, qvel, goal, switch = (d[k] for k in ("observations", "infos/qpos", "infos/qvel", "infos/goal",
                                                   "timeouts"))
    assert not d["terminals"].any()
    assert np.all(np.abs(d["actions"]) <= 1.0)
    idx = np.nonzero(switch)[0]
    assert 15 < len(idx) < 100  # ~80 steps per goal in U-Maze
    assert np.diff(np.r_[-1, idx]).max() <= 301  # timeout after max_episode_steps
    after = idx[idx + 1 < len(obs)] + 1
    # The quirk: the row after a goal switch repeats the previous observation; qpos/qvel hold the true state.
    np.testing.assert_array_equal(obs[after], obs[after - 1])
    assert np.all(np.abs(qpos[after] - obs[after, :2]).max(axis=1) > 0)
    fresh = np.setdiff1d(np.arange(len(obs)), after)
    np.testing.assert_array_equal(obs[fresh, :2], qpos[fresh])
    np.testing.assert_array_equal(obs[fresh, 2:], qvel[fresh])
    # Goals change exactly after a switch, and each row's goal cell is an empty/goal cell.
    changed = np.nonzero(np.any(goal[1:] != goal[:-1], axis=1))[0]
    assert set(changed) <= set(idx) and len(changed) >= len(idx) - 3
    maze = parse_maze(U_MAZE)
    assert all(maze[tuple(c)] != WALL for c in np.round(goal).astype(int))
    # Rewards relabelled with the fixed goal (1, 1) and each row's own observation.
    expected = (np.linalg.norm(obs[:, :2] - np.array([1.0, 1.0]), axis=1) <= 0.5).astype(np.float32)
    np.testing.assert_array_equal(d["rewards"], expected)
    assert d["rewards"].sum() > 0


def test_generation_is_seeded(small_dataset):
    a, b, c = (load_d4rl(small_dataset[k]) for k in "abc")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["observations"], c["observations"])


def test_generation_fast_path_matches_env_step():
    env = Maze2dEnv(U_MAZE)
    env.np_random = np.random.default_rng(5)
    controller = WaypointController(U_MAZE, rng=np.random.default_rng(6))
    out = rollout(env, controller, np.random.default_rng(7), 1500, 300)
    replay = Maze2dEnv(U_MAZE)
    replay.reset(seed=0)
    replay.set_state(out["qpos"][0], out["qvel"][0])
    for t in range(len(out["actions"]) - 1):
        obs = replay.step(out["actions"][t])[0]
        np.testing.assert_array_equal(obs, np.r_[out["qpos"][t + 1], out["qvel"][t + 1]])


def test_dense_generation_and_default_path(tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    assert default_output_path("maze2d-umaze-v1").name == "maze2d-umaze-sparse-v1.hdf5"
    path = generate_maze2d("maze2d-umaze-dense-v1", 400, seed=2, noisy=False)
    assert path == tmp_path / "maze2d-umaze-dense-v1.hdf5"
    assert find_dataset("maze2d-umaze-dense-v1") == path
    d = load_d4rl(path)
    dist = np.linalg.norm(d["observations"][:, :2] - np.array([1.0, 1.0]), axis=1)
    np.testing.assert_allclose(d["rewards"], np.exp(-dist), rtol=1e-6)


def test_cli_main(tmp_path):
    path = main(["--env", "maze2d-medium-v1", "--num-samples", "500", "--seed", "3", "--output",
                 str(tmp_path / "m.hdf5")])
    d = load_d4rl(path)
    assert d["observations"].shape == (500, 4)
    with pytest.raises(ValueError, match="known names"):
        generate_maze2d("maze2d-nope-v1", 10, path=tmp_path / "x.hdf5")


def test_longest_route_by_hand():
    """U-Maze: (1,1) → (1,2) → (1,3) → (2,3) → (3,3) → (3,2) → (3,1), 6 moves; an open 3×3 room: corner to corner 4."""
    from diffuser.envs.maze2d import longest_route

    assert longest_route("#####\\#GOO#\\###O#\\#OOO#\\#####") == 6
    assert longest_route("#####\\#OOO#\\#OGO#\\#OOO#\\#####") == 4


def test_plans_that_cannot_reach_the_goal_within_an_episode_are_refused_before_training(tmp_path):
    """U-Maze: 6 cells at 0.05 cells per step need 120 env steps, and an episode has 300."""
    from diffuser.envs.maze2d import check_plan_span
    from test_smoke import run

    check_plan_span("maze2d-umaze-v1", 120, 1)  # exactly enough
    check_plan_span("maze2d-umaze-v1", 38, 8)  # 297 steps
    with pytest.raises(ValueError, match="spans .* = 119 env steps, too short .* at least 120"):
        check_plan_span("maze2d-umaze-v1", 119, 1)
    with pytest.raises(ValueError, match=r"= 305 env steps, longer than an episode of maze2d-umaze-v1 \(300 steps\)"):
        check_plan_span("maze2d-umaze-v1", 39, 8)
    for horizon, stride in ((32, 2), (64, 8)):  # 63 and 505 env steps
        out = run("train.py", f"horizon={horizon}", f"env.stride={stride}", f"run_dir={tmp_path / 'run'}",
                  "logger=disabled", env_dir=tmp_path, home=tmp_path / "home", check=False)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 1 and len(lines) == 1 and "env.stride" in lines[0], out.stderr[-2000:]
        assert not list(tmp_path.rglob("*.hdf5")) and not list(tmp_path.rglob("checkpoints"))  # no data made
