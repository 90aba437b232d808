"""Pictures of Maze2D plans and rollouts drawn over the maze (qpos coordinates, exact wall geometry)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

WALL = 10  # diffuser.envs.maze2d.WALL, repeated here so rendering stays import-light


def draw_maze2d(
    ax: Axes,
    maze_arr: np.ndarray,
    paths: Sequence[np.ndarray] = (),
    goal: np.ndarray | None = None,
    executed: Sequence[np.ndarray] = (),
    wall_value: int = WALL,
) -> None:
    """Draw walls, planned paths (colored by time) and executed paths on ``ax``.

    Plot x = column (qpos[1]), y = row (qpos[0]) pointing down. A wall cell (i, j) occupies
    [i − 0.7, i + 0.3] × [j − 0.7, j + 0.3] in qpos coordinates (walls at index + 1, body offset 1.2).
    """
    rows, cols = maze_arr.shape
    for i, j in np.argwhere(maze_arr == wall_value):
        ax.add_patch(Rectangle((j - 0.7, i - 0.7), 1, 1, color="0.25"))
    for path in paths:
        path = np.asarray(path)
        ax.plot(path[:, 1], path[:, 0], color="0.6", lw=0.8, zorder=1)
        ax.scatter(path[:, 1], path[:, 0], c=np.linspace(0, 1, len(path)), cmap="viridis", s=6, zorder=2)
        ax.scatter(path[0, 1], path[0, 0], color="black", marker="o", s=30, zorder=3)
    for path in executed:
        path = np.asarray(path)
        ax.plot(path[:, 1], path[:, 0], color="tab:red", lw=1.0, alpha=0.8, zorder=2)
    if goal is not None:
        ax.scatter(goal[1], goal[0], color="tab:red", marker="*", s=150, zorder=4)
    ax.set_xlim(-0.7, cols - 0.7)
    ax.set_ylim(rows - 0.7, -0.7)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def save_maze2d_figure(
    path: str | Path,
    maze_arr: np.ndarray,
    paths: Sequence[np.ndarray],
    goals: Sequence[np.ndarray | None],
    executed: Sequence[np.ndarray] | None = None,
    titles: Sequence[str] | None = None,
) -> np.ndarray:
    """One panel per path; saves a PNG and returns it as an (H, W, 3) uint8 array."""
    n = len(paths)
    fig = Figure(figsize=(2.6 * n, 2.6))  # no pyplot: leaves the caller's backend (e.g. a notebook's) alone
    canvas = FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)
    for k, ax in enumerate(axes[0]):
        draw_maze2d(ax, maze_arr, [paths[k]], goals[k], [executed[k]] if executed is not None else ())
        if titles is not None:
            ax.set_title(titles[k], fontsize=8)
    fig.tight_layout()
    canvas.draw()
    image = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(path)
    return image
