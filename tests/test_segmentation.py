"""Episode ends and windows as the presets build them (Maze2D re-segmentation, locomotion padding), and Multi2D goals.

Each row carries its own index in an observation entry, so every window names the rows it was cut from; the
expected windows are listed by hand from the rules of the original's ``maze2d_set_terminals`` and SequenceDataset.
"""

from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import diffuser.envs  # noqa: F401  (registers maze2d-*)
from diffuser.config import register_configs
from diffuser.data.preprocess import preprocess
from diffuser.envs.maze2d import WALL
from diffuser.planning.maze2d import ClosedLoop, Maze2dPlanner, Plan, run_maze2d_episodes
from diffuser.tasks import build_dataset
from test_planning import make_planner

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
register_configs()
FAR = (3.0, 3.0)  # a U-Maze cell away from the goal (1, 1)


def train_config(*overrides):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return OmegaConf.to_object(compose(config_name="train", overrides=list(overrides)))


def window_rows(dataset, action_dim):
    """The row index stored in each window's first velocity entry (unnormalized): (n_windows, H) ints."""
    raw = dataset.normalizer.unnormalize(dataset.get_batch(np.arange(len(dataset))).trajectories)
    return np.rint(raw[..., action_dim + 2].numpy()).astype(int)


def test_maze2d_segments_end_where_the_agent_leaves_the_goal_and_windows_stay_inside():
    """40 rows at (3, 3) except at the goal (1, 1) on rows 10–11, 25 and 38–39. maze2d_set_terminals ends a segment
    on the last row at the goal before leaving it: rows 11 and 25 (38–39 never leave, and the file's own timeout on
    row 5 is overwritten). Segments 0–11 and 12–25; rows after 25 end no segment and are dropped. Each segment's
    last row is dropped (0–10, 12–24); windows of H 4 without padding start at range(L − H): 0–6 and 12–20."""
    config = train_config("experiment=maze2d_umaze", "horizon=4")
    assert config.env.preprocess == ["maze2d_set_terminals"] and not config.env.use_padding
    xy = np.tile(FAR, (40, 1))
    xy[[10, 11, 25, 38, 39]] = [[1.0, 1.0], [1.2, 0.9], [0.8, 1.1], [1.0, 1.0], [1.1, 1.0]]
    rows = np.arange(40, dtype=np.float32)
    data = {
        "observations": np.column_stack([xy, rows, -rows]).astype(np.float32),
        "actions": np.column_stack([np.sin(rows), np.cos(rows)]).astype(np.float32),
        "rewards": np.zeros(40, np.float32),
        "terminals": np.zeros(40, bool),
        "timeouts": np.eye(40, dtype=bool)[5],
    }
    data = preprocess(data, config.env.preprocess, config.env.name)
    assert np.flatnonzero(data["timeouts"]).tolist() == [11, 25]
    dataset = build_dataset(data, config.env, horizon=4, kind="diffusion")
    assert dataset.path_lengths.tolist() == [11, 13]
    expected = [list(range(s, s + 4)) for s in [*range(0, 7), *range(12, 21)]]
    assert window_rows(dataset, 2).tolist() == expected
    batch = dataset.get_batch(np.arange(len(dataset)))
    assert set(batch.conditions) == {0, 3}  # start and goal states of each window
    torch.testing.assert_close(batch.conditions[3], batch.trajectories[:, 3, 2:])


def test_strided_windows_take_every_stride_th_row_of_a_longer_span_inside_each_segment():
    """The data of the test above, H 3 at env.stride 2: a window spans 5 rows and keeps rows s, s+2, s+4, so its
    starts are range(L − 5) per segment (L 11 and 13): 0–5 and 12–19. Conditions: its first and last kept rows."""
    config = train_config("experiment=maze2d_umaze", "horizon=3", "env.stride=2")
    xy = np.tile(FAR, (40, 1))
    xy[[10, 11, 25, 38, 39]] = [[1.0, 1.0], [1.2, 0.9], [0.8, 1.1], [1.0, 1.0], [1.1, 1.0]]
    rows = np.arange(40, dtype=np.float32)
    data = {
        "observations": np.column_stack([xy, rows, -rows]).astype(np.float32),
        "actions": np.zeros((40, 2), np.float32),
        "rewards": np.zeros(40, np.float32),
        "terminals": np.zeros(40, bool),
        "timeouts": np.zeros(40, bool),
    }
    dataset = build_dataset(preprocess(data, config.env.preprocess, config.env.name), config.env, horizon=3,
                            kind="diffusion")
    expected = [[s, s + 2, s + 4] for s in [*range(0, 6), *range(12, 20)]]
    assert window_rows(dataset, 2).tolist() == expected
    assert set(dataset.get_batch(np.arange(2)).conditions) == {0, 2}


def test_a_stride_is_refused_for_runs_that_execute_every_step():
    config = train_config("experiment=locomotion", "env.stride=4")
    data = {"observations": np.zeros((20, 3), np.float32), "actions": np.zeros((20, 2), np.float32),
            "rewards": np.zeros(20, np.float32), "terminals": np.zeros(20, bool), "timeouts": np.eye(20, dtype=bool)[-1]}
    with pytest.raises(ValueError, match="env.stride: 4 is for Maze2D"):
        build_dataset(data, config.env, horizon=4, kind="diffusion")
    maze = train_config("experiment=maze2d_umaze", "env.stride=0")
    with pytest.raises(ValueError, match="env.stride: 0 must be an integer"):
        build_dataset(data, maze.env, horizon=4, kind="diffusion")


def test_locomotion_windows_run_into_zero_padding_never_into_the_next_episode():
    """Padding (locomotion): episodes of 5 and 6 rows, H 4; starts 0..L−2 (range(L − 1)), and rows past an episode's
    end are zeros, never the next episode's rows. No row is dropped (drop_last_transition is Maze2D's)."""
    config = train_config("experiment=locomotion", "horizon=4")
    assert config.env.use_padding and not config.env.drop_last_transition
    rows = np.arange(11, dtype=np.float32)
    terminals = np.eye(11, dtype=bool)[4]
    data = {
        "observations": np.column_stack([np.ones(11), np.ones(11), rows + 1]).astype(np.float32),  # 0 marks padding
        "actions": np.ones((11, 2), np.float32),
        "rewards": np.zeros(11, np.float32),
        "terminals": terminals,
        "timeouts": np.eye(11, dtype=bool)[10],
    }
    dataset = build_dataset(data, config.env, horizon=4, kind="diffusion")
    assert dataset.path_lengths.tolist() == [5, 6]
    raw = dataset.normalizer.unnormalize(dataset.get_batch(np.arange(len(dataset))).trajectories)
    marks = np.rint(raw[..., 2 + 2].numpy()).astype(int) - 1  # row index, −1 for padding
    pad = -1
    expected = [[0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, pad], [3, 4, pad, pad],
                [5, 6, 7, 8], [6, 7, 8, 9], [7, 8, 9, 10], [8, 9, 10, pad], [9, 10, pad, pad]]
    assert marks.tolist() == expected


class RecordingPlanner:
    """Records the goals it is asked to plan to and plans to stay in place."""

    def __init__(self, horizon=8):
        self.horizon, self.goals = horizon, None
        self.loop, self.device = ClosedLoop(), torch.device("cpu")

    def plan(self, observations, goals, generator=None):
        self.goals = np.array(goals)
        states = np.repeat(np.asarray(observations)[:, None], self.horizon, axis=1)
        return Plan(np.zeros((len(goals), self.horizon, 2)), states)


def test_multi2d_draws_a_goal_per_episode_and_plans_and_scores_against_it():
    """Maze2D plans to the fixed 'G' cell (1, 1); Multi2D (multi_task) to a random empty/goal cell + U(±0.1) per
    episode, the same goal the env then rewards."""
    envs = [gymnasium.make("maze2d-umaze-v1") for _ in range(6)]
    single = RecordingPlanner()
    run_maze2d_episodes(envs, single, seed=0, max_episode_steps=2)
    assert single.goals.tolist() == [[1.0, 1.0]] * 6

    multi = RecordingPlanner()
    run_maze2d_episodes(envs, multi, seed=0, multi_task=True, max_episode_steps=2)
    cells = np.rint(multi.goals).astype(int)
    maze = envs[0].unwrapped.maze_arr
    assert (np.abs(multi.goals - cells) <= 0.1).all() and all(maze[tuple(c)] != WALL for c in cells)
    assert len({tuple(c) for c in cells}) > 1 and not np.isin(multi.goals, [1.0]).all()
    for env, goal in zip(envs, multi.goals):
        np.testing.assert_array_equal(env.unwrapped.target, goal)
        assert env.unwrapped.reward(goal) == 1.0 and env.unwrapped.reward(goal + 0.6) == 0.0


def test_maze2d_planner_conditions_the_last_state_on_the_goal_at_rest():
    """cond = {0: s_0, H−1: [goal_x, goal_y, 0, 0]}, normalized like the data."""
    planner: Maze2dPlanner = make_planner(horizon=8)
    conds = []
    sample = planner.diffusion.conditional_sample
    planner.diffusion.conditional_sample = lambda cond, **kw: conds.append(cond) or sample(cond, **kw)
    starts, goals = np.array([[1.0, 1.0, 0.1, -0.2]]), np.array([[3.0, 2.5]])
    planner.plan(starts, goals, torch.Generator().manual_seed(0))
    (cond,) = conds
    assert set(cond) == {0, 7}
    normalize = planner.diffusion.normalize_observation
    torch.testing.assert_close(cond[0], normalize(torch.tensor(starts, dtype=torch.float32)))
    torch.testing.assert_close(cond[7], normalize(torch.tensor([[3.0, 2.5, 0.0, 0.0]])))
