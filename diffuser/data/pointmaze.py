"""The exact map between D4RL maze2d and gymnasium-robotics PointMaze coordinates (docs/d4rl_and_envs.md §3.1).

D4RL: qpos = (row r, column c); the ball's body sits at world (1.2, 1.2) + qpos, wall (i, j) at (i + 1, j + 1).
PointMaze: the maze is centred, cell (i, j) has its centre at ((j + 0.5) − W/2, H/2 − (i + 0.5)) for H rows and
W columns, and the body starts at the origin. The same physical state reads::

    x = (c + 0.2) − (W − 1)/2     y = (H − 1)/2 − (r + 0.2)     (vx, vy) = (v_c, −v_r)     (a_x, a_y) = (a_c, −a_r)

Under this map both simulations agree step for step (checked against gymnasium-robotics 1.4: ≤ 7e-14 per step
over 20,000 random steps per maze, wall contacts included). A PointMaze goal at a cell centre maps to (i − 0.2,
j − 0.2): where that centre is in D4RL's qpos, 0.2 below D4RL's own target convention (the cell index itself).
"""

from __future__ import annotations

import os

import numpy as np

from diffuser.envs.maze2d import (
    GOAL,
    LARGE_MAZE,
    MAZE2D_SPECS,
    MEDIUM_MAZE,
    OPEN,
    U_MAZE,
    WALL,
    parse_maze,
)

POINTMAZE_LAYOUTS = {"open": OPEN, "umaze": U_MAZE, "medium": MEDIUM_MAZE, "large": LARGE_MAZE}  # D4RL's mazes


def maze_walls(layout: str) -> np.ndarray:
    """(H, W) bool grid, True on wall cells."""
    return parse_maze(layout) == WALL


def _states(states: np.ndarray) -> np.ndarray:
    states = np.asarray(states, dtype=np.float64)
    if states.ndim != 2 or states.shape[1] not in (2, 4):
        raise ValueError(f"expected (N, 2) positions or (N, 4) positions and velocities, got shape {states.shape}")
    return states


def d4rl_to_pointmaze(states: np.ndarray, n_rows: int, n_cols: int) -> np.ndarray:
    """D4RL (r, c[, v_r, v_c]) → PointMaze (x, y[, vx, vy]).  states: (N, 2) or (N, 4) → same shape, float64."""
    s = _states(states)
    out = np.empty_like(s)
    out[:, 0] = (s[:, 1] + 0.2) - (n_cols - 1) / 2
    out[:, 1] = (n_rows - 1) / 2 - (s[:, 0] + 0.2)
    if s.shape[1] == 4:
        out[:, 2], out[:, 3] = s[:, 3], -s[:, 2]
    return out


def pointmaze_to_d4rl(states: np.ndarray, n_rows: int, n_cols: int) -> np.ndarray:
    """PointMaze (x, y[, vx, vy]) → D4RL (r, c[, v_r, v_c]), the exact inverse.  (N, 2) or (N, 4) → same shape."""
    s = _states(states)
    out = np.empty_like(s)
    out[:, 0] = (n_rows - 1) / 2 - s[:, 1] - 0.2
    out[:, 1] = s[:, 0] + (n_cols - 1) / 2 - 0.2
    if s.shape[1] == 4:
        out[:, 2], out[:, 3] = -s[:, 3], s[:, 2]
    return out


def d4rl_action_to_pointmaze(actions: np.ndarray) -> np.ndarray:
    """(a_r, a_c) → (a_x, a_y) = (a_c, −a_r).  actions: (N, 2)."""
    a = np.asarray(actions)
    return np.stack([a[:, 1], -a[:, 0]], axis=1)


def pointmaze_action_to_d4rl(actions: np.ndarray) -> np.ndarray:
    """(a_x, a_y) → (a_r, a_c) = (−a_y, a_x).  actions: (N, 2)."""
    a = np.asarray(actions)
    return np.stack([-a[:, 1], a[:, 0]], axis=1)


def pointmaze_maze(dataset_id: str, env_spec: dict, where: str | os.PathLike) -> str:
    """The D4RL maze of a PointMaze dataset: matched on the walls of the spec's maze_map, else named by the id."""
    maze_map = (env_spec.get("kwargs") or {}).get("maze_map")
    if maze_map is not None:
        walls = np.array([[cell == 1 for cell in row] for row in maze_map], dtype=bool)
        for maze, layout in POINTMAZE_LAYOUTS.items():
            if np.array_equal(maze_walls(layout), walls):
                return maze
        raise ValueError(f"{where}: the env_spec maze_map is not one of the D4RL mazes {list(POINTMAZE_LAYOUTS)}; "
                         "only those can be converted to maze2d coordinates")
    maze = dataset_id.rsplit("/", 1)[-1].split("-")[0]
    if maze not in POINTMAZE_LAYOUTS:
        raise ValueError(f"{where}: cannot tell the maze of '{dataset_id}' (no maze_map in env_spec, and the name "
                         f"is not one of {list(POINTMAZE_LAYOUTS)})")
    return maze


def maze2d_name(maze: str, reward_type: str) -> str | None:
    """The registered maze2d env with this maze and reward (umaze, dense → maze2d-umaze-dense-v1), or None."""
    name = f"maze2d-{maze}{'-dense' if reward_type == 'dense' else ''}-v1"
    return name if name in MAZE2D_SPECS else None


def pointmaze_to_maze2d(
    data: dict[str, np.ndarray], obs: list[np.ndarray], goals: list[np.ndarray], *, maze: str, reward_type: str
) -> dict[str, np.ndarray]:
    """Flat arrays read from a PointMaze dataset → the D4RL maze2d layout of maze2d_generate's files.

    obs, goals: per-episode (T + 1, 4) observations and (T + 1, 2) desired goals, PointMaze coordinates.
    Observations, next observations, actions and goals (``infos/goal``) are mapped; ``infos/qpos``/``qvel`` are the
    mapped state; rewards are relabelled as D4RL's files are (the maze's fixed 'G' goal, the row's own position,
    sparse ≤ 0.5 or dense exp(−d); the dataset's own go to ``infos/minari_rewards``); ``resets`` is True on an
    episode's last row when the next episode does not start where it ended (an env reset, not a goal reach).
    """
    from diffuser.data.preprocess import relabel_rewards

    grid = parse_maze(POINTMAZE_LAYOUTS[maze])
    n_rows, n_cols = grid.shape
    out = dict(data)
    out["observations"] = pointmaze_to_d4rl(data["observations"], n_rows, n_cols)
    out["next_observations"] = pointmaze_to_d4rl(data["next_observations"], n_rows, n_cols)
    out["actions"] = pointmaze_action_to_d4rl(data["actions"])
    out["infos/goal"] = pointmaze_to_d4rl(np.concatenate([g[:-1] for g in goals]), n_rows, n_cols)
    out["infos/qpos"], out["infos/qvel"] = out["observations"][:, :2], out["observations"][:, 2:]
    out["infos/minari_rewards"] = data["rewards"]
    out["rewards"] = relabel_rewards(out["observations"], np.argwhere(grid == GOAL)[0], reward_type)
    resets = []
    for k, o in enumerate(obs):
        flags = np.zeros(len(o) - 1, dtype=bool)
        flags[-1] = k + 1 < len(obs) and not np.array_equal(o[-1], obs[k + 1][0])
        resets.append(flags)
    out["resets"] = np.concatenate(resets)
    return out
