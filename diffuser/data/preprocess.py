"""Preprocessing steps applied to raw D4RL arrays before episodes are split (named in ``env.preprocess``)."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np


def relabel_rewards(observations: np.ndarray, goal: np.ndarray, reward_type: str) -> np.ndarray:
    """Rewards of each row's own observation w.r.t. the fixed goal: sparse ≤ 0.5 → 1, dense exp(−distance)."""
    from diffuser.envs.maze2d import GOAL_RADIUS

    dist = np.linalg.norm(observations[:, :2].astype(np.float64) - np.asarray(goal, dtype=np.float64), axis=1)
    if reward_type == "sparse":
        return (dist <= GOAL_RADIUS).astype(np.float32)
    return np.exp(-dist).astype(np.float32)


def maze2d_set_terminals(data: Mapping[str, np.ndarray], goal: np.ndarray, threshold: float = 0.5) -> dict:
    """Re-segment Maze2D data at the fixed goal: timeouts[t] = at_goal[t] and not at_goal[t+1].

    A segment ends each time the agent leaves the goal region (‖xy − goal‖ < threshold); the file's own timeouts are
    overwritten, as in the original's ``maze2d_set_terminals``. Rows flagged in ``resets`` (data read from Minari:
    the env was reset after that row, so the next one does not continue it) end a segment too.
    """
    xy = np.asarray(data["observations"])[:, :2]
    at_goal = np.linalg.norm(xy - np.asarray(goal, dtype=xy.dtype), axis=-1) < threshold
    timeouts = np.zeros(len(xy), dtype=bool)
    timeouts[:-1] = at_goal[:-1] & ~at_goal[1:]
    if "resets" in data:
        timeouts |= np.asarray(data["resets"], dtype=bool)
    return {**data, "timeouts": timeouts}


def maze2d_goal(env_name: str) -> np.ndarray:
    """The fixed target of a registered Maze2D env: its 'G' cell, in qpos coordinates."""
    from diffuser.envs.maze2d import GOAL, MAZE2D_SPECS, parse_maze

    if env_name not in MAZE2D_SPECS:
        raise ValueError(f"maze2d_set_terminals needs a Maze2D env; '{env_name}' is not one of {sorted(MAZE2D_SPECS)}")
    grid = parse_maze(MAZE2D_SPECS[env_name].layout)
    return np.argwhere(grid == GOAL)[0].astype(np.float32)


def preprocess(data: Mapping[str, np.ndarray], names: Sequence[str], env_name: str) -> dict[str, np.ndarray]:
    """Apply the named preprocessing steps in order."""
    steps: dict[str, Callable[[Mapping[str, np.ndarray]], dict]] = {
        "maze2d_set_terminals": lambda d: maze2d_set_terminals(d, maze2d_goal(env_name)),
    }
    out = dict(data)
    for name in names:
        if name not in steps:
            raise ValueError(f"unknown preprocess step '{name}'; valid: {sorted(steps)}")
        out = steps[name](out)
    return out
