"""D4RL's WaypointController: grid Q-iteration to a target cell, then a PD servo along jittered waypoints.

Port of ``d4rl.pointmaze.waypoint_controller`` (docs/d4rl_and_envs.md §1.5). The grid has a state per layout cell (walls
included, since a rounded position can land on one); 5 actions NOOP, UP (0, −1), DOWN (0, +1), LEFT (−1, 0),
RIGHT (+1, 0) in (row, column) index space; moves into a wall or off the grid stay put. Reward 1 in the target cell,
hard Q-iteration for 50 iterations with γ 0.99, argmax ties broken by the lowest action index (as ``np.argmax``).

Differences from D4RL, none of which changes the produced actions: transitions are precomputed once, Q-values and
greedy cell paths are cached per target cell (and start cell), jitter comes from the controller's own
``np.random.Generator``, and an index past the last waypoint stays on the last one instead of raising.
"""

from __future__ import annotations

import math

import numpy as np

from diffuser.envs.maze2d import WALL, parse_maze

ACTIONS = ((0, 0), (0, -1), (0, 1), (-1, 0), (1, 0))  # NOOP, UP, DOWN, LEFT, RIGHT as (d_row, d_col)


def grid_transitions(maze_arr: np.ndarray) -> np.ndarray:
    """(S, 5) next-cell index of each (cell, action); illegal moves (wall, off grid) stay in place."""
    rows, cols = maze_arr.shape
    nxt = np.zeros((rows * cols, len(ACTIONS)), dtype=np.int64)
    for i in range(rows):
        for j in range(cols):
            for a, (di, dj) in enumerate(ACTIONS):
                ni, nj = i + di, j + dj
                legal = 0 <= ni < rows and 0 <= nj < cols and maze_arr[ni, nj] != WALL
                nxt[i * cols + j, a] = ni * cols + nj if legal else i * cols + j
    return nxt


def q_iteration(next_state: np.ndarray, target: int, n_iters: int = 50, discount: float = 0.99) -> np.ndarray:
    """Hard Q-iteration with reward 1 in the target cell: Q ← r(s) + γ · max_a' Q(T(s, a), a')."""
    reward = np.zeros((next_state.shape[0], 1))
    reward[target] = 1.0
    q = np.zeros(next_state.shape, dtype=np.float64)
    for _ in range(n_iters):
        q = reward + discount * q.max(axis=1)[next_state]
    return q


class WaypointController:
    """PD controller that follows grid waypoints to the cell of a (possibly noisy) target, as in D4RL."""

    def __init__(
        self,
        layout: str,
        rng: np.random.Generator | None = None,
        solve_thresh: float = 0.1,
        p_gain: float = 10.0,
        d_gain: float = -1.0,
    ):
        self.maze_arr = parse_maze(layout)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.solve_thresh = solve_thresh
        self.vel_thresh = 0.1
        self.p_gain = p_gain
        self.d_gain = d_gain
        self._cols = self.maze_arr.shape[1]
        self._next_state = grid_transitions(self.maze_arr)
        self._q_cache: dict[int, np.ndarray] = {}
        self._path_cache: dict[tuple[int, int], list[tuple[int, int]]] = {}
        # D4RL starts with target (0, 0) (its "-1000 * ONES" is zeros) and previous location (0, 0).
        self._target = (0, 0)
        self._waypoints: list[tuple[float, float]] = []
        self._waypoint_idx = 0
        self._prev_loc = (0.0, 0.0)

    @property
    def waypoints(self) -> np.ndarray:
        """The current waypoints, shape (n, 2); the last one is the target cell."""
        return np.array(self._waypoints, dtype=np.float64).reshape(-1, 2)

    @property
    def target_cell(self) -> tuple[int, int]:
        """The grid cell the controller is driving to."""
        return self._target

    def get_action(
        self, location: np.ndarray, velocity: np.ndarray, target: np.ndarray
    ) -> tuple[np.ndarray, bool]:
        """Action in [−1, 1]² and whether the target cell is reached (D4RL's ``get_action``)."""
        ax, ay, solved = self.act(
            float(location[0]), float(location[1]), float(velocity[0]), float(velocity[1]),
            float(target[0]), float(target[1]),
        )
        return np.array([ax, ay]), solved

    def act(self, x: float, y: float, vx: float, vy: float, tx: float, ty: float) -> tuple[float, float, bool]:
        """Float-only core of :meth:`get_action` (fast path for data generation): (ax, ay, solved)."""
        cell = (round(tx), round(ty))  # Python round: half to even, like D4RL's int(round(.))
        if cell != self._target:
            self._new_target(x, y, cell)
        gx, gy = self._target
        displacement = math.hypot(self._prev_loc[0] - x, self._prev_loc[1] - y)
        solved = math.hypot(x - gx, y - gy) < self.solve_thresh and displacement < self.vel_thresh
        if solved:
            wx, wy = float(gx), float(gy)
        else:
            wx, wy = self._waypoints[self._waypoint_idx]
        ax = self.p_gain * (wx - x) + self.d_gain * vx
        ay = self.p_gain * (wy - y) + self.d_gain * vy
        if not solved and math.hypot(x - wx, y - wy) < self.solve_thresh and displacement < self.vel_thresh:
            self._waypoint_idx = min(self._waypoint_idx + 1, len(self._waypoints) - 1)
        self._prev_loc = (x, y)
        ax = -1.0 if ax < -1.0 else (1.0 if ax > 1.0 else ax)
        ay = -1.0 if ay < -1.0 else (1.0 if ay > 1.0 else ay)
        return ax, ay, solved

    def _new_target(self, x: float, y: float, cell: tuple[int, int]) -> None:
        """Plan waypoints from the rounded position to ``cell``: greedy grid path, non-final ones jittered."""
        rows, cols = self.maze_arr.shape
        if not (0 <= cell[0] < rows and 0 <= cell[1] < cols):
            raise ValueError(f"target cell {cell} is outside the {rows}x{cols} maze")
        start = (min(max(round(x), 0), rows - 1), min(max(round(y), 0), cols - 1))
        path = self._cell_path(start, cell)
        n_jittered = len(path) - 1 if path[-1] == cell else len(path)  # only the goal cell is exact
        jitter = self.rng.uniform(size=(n_jittered, 2)) * 0.2
        self._waypoints = [(i - dx, j - dy) for (i, j), (dx, dy) in zip(path, jitter.tolist())]
        self._waypoints += [(float(i), float(j)) for i, j in path[n_jittered:]]
        self._waypoint_idx = 0
        self._prev_loc = (float(start[0]), float(start[1]))
        self._target = cell

    def _cell_path(self, start: tuple[int, int], goal: tuple[int, int]) -> list[tuple[int, int]]:
        """Cells visited by the greedy Q policy from start (excluded) to goal (included), at most 100 moves."""
        key = (start, goal)
        if key not in self._path_cache:
            goal_idx = goal[0] * self._cols + goal[1]
            if goal_idx not in self._q_cache:
                self._q_cache[goal_idx] = q_iteration(self._next_state, goal_idx)
            policy = self._q_cache[goal_idx].argmax(axis=1)
            s, path = start[0] * self._cols + start[1], []
            for _ in range(100):
                s = int(self._next_state[s, policy[s]])
                path.append(divmod(s, self._cols))
                if s == goal_idx:
                    break
            self._path_cache[key] = path
        return self._path_cache[key]
