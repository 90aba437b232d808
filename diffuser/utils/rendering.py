"""Pictures of plans and rollouts: Maze2D drawn over the maze (matplotlib), locomotion as MuJoCo frames."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from diffuser.utils.files import atomic_path

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
    save_image(path, image)
    return image


def maze2d_video_frames(
    maze_arr: np.ndarray, plan: np.ndarray, executed: np.ndarray, goal: np.ndarray | None, *, every: int = 4,
    size: float = 3.2,
) -> np.ndarray:
    """An episode as frames: the plan over the maze, and the executed path growing by ``every`` env steps with the
    agent as a red dot. plan (H, ≥2), executed (T, ≥2) qpos-first observations → (F, H', W', 3) uint8."""
    fig = Figure(figsize=(size, size))
    canvas = FigureCanvasAgg(fig)
    ax = fig.subplots()
    ends = list(range(1, len(executed) + 1, every))
    if ends[-1] != len(executed):
        ends.append(len(executed))
    frames = []
    for end in ends:
        ax.clear()
        draw_maze2d(ax, maze_arr, [plan], goal, [executed[:end]])
        ax.scatter(executed[end - 1, 1], executed[end - 1, 0], color="tab:red", s=40, zorder=5)
        ax.set_title(f"t = {end - 1}", fontsize=8)
        fig.tight_layout()
        canvas.draw()
        frames.append(np.asarray(canvas.buffer_rgba())[..., :3].copy())
    return np.stack(frames)


# ---------------------------------------------------------------------------------------------- MuJoCo locomotion
class LocomotionRenderer:
    """MuJoCo offscreen frames of locomotion observations, as the original's MuJoCoRenderer draws plans.

    Observations are rows of (qpos[1:], qvel): they lack the root x, which is rebuilt as the original does,
    x_t = Σ_{s≤t} ẋ_s · dt (cumulative x-velocity times the env's dt). Needs an OpenGL backend (MUJOCO_GL=egl or
    osmesa without a display).
    """

    def __init__(self, model, dt: float, *, width: int = 320, height: int = 240):
        import mujoco

        self.model, self.dt = model, dt
        self.data = mujoco.MjData(model)
        self.renderer = mujoco.Renderer(model, height, width)
        self.agent_geoms = np.flatnonzero(model.geom_bodyid > 0)  # everything but the world body (floor)

    @classmethod
    def for_env(cls, name: str, gym_version: str = "v4", **kwargs) -> "LocomotionRenderer":
        """The renderer of a D4RL locomotion name (e.g. hopper-medium-v2), on the matching gymnasium model."""
        from diffuser.envs.locomotion import make_locomotion_env

        env = make_locomotion_env(name, gym_version).unwrapped
        return cls(env.model, env.dt, **kwargs)

    def states(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """observations (T, nq - 1 + nv) → qpos (T, nq) with the rebuilt root x, qvel (T, nv)."""
        observations = np.asarray(observations, dtype=np.float64)
        nq, nv = self.model.nq, self.model.nv
        if observations.ndim != 2 or observations.shape[1] != nq - 1 + nv:
            raise ValueError(
                f"observations of shape {observations.shape} do not fit this model: expected (T, {nq - 1 + nv}), "
                f"rows of qpos[1:] ({nq - 1}) and qvel ({nv})"
            )
        qvel = observations[:, nq - 1 :]
        x = np.cumsum(qvel[:, 0]) * self.dt
        return np.concatenate([x[:, None], observations[:, : nq - 1]], axis=1), qvel

    def _set(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        import mujoco

        self.data.qpos[:], self.data.qvel[:] = qpos, qvel
        mujoco.mj_forward(self.model, self.data)

    def _fixed_camera(self, qpos: np.ndarray):
        """A side view centred on the states' x range, far enough back to see all of it."""
        import mujoco

        camera = mujoco.MjvCamera()
        camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        lo, hi = float(qpos[:, 0].min()), float(qpos[:, 0].max())
        self._set(qpos[0], np.zeros(self.model.nv))
        camera.lookat[:] = [(lo + hi) / 2, 0.0, float(self.data.xpos[1, 2])]
        camera.distance = max(3.0, 1.1 * (hi - lo) + 1.5)
        camera.azimuth, camera.elevation = 90.0, -10.0
        return camera

    def frames(self, observations: np.ndarray, *, camera: str = "track") -> np.ndarray:
        """One frame per observation: (T, H, W, 3) uint8. camera: the model's tracking camera, or "fixed" (one
        side view over the whole x range, so progress shows as motion across the picture)."""
        qpos, qvel = self.states(observations)
        view = self._fixed_camera(qpos) if camera == "fixed" else camera
        out = []
        for q, v in zip(qpos, qvel):
            self._set(q, v)
            self.renderer.update_scene(self.data, camera=view)
            out.append(self.renderer.render())
        return np.stack(out)

    def composite(self, observations: np.ndarray, *, every: int = 1) -> np.ndarray:
        """Every ``every``-th state drawn into one side view, later states in front (the original's composite):
        (H, W, 3) uint8. The agent's pixels come from MuJoCo's segmentation rendering."""
        qpos, qvel = self.states(observations)
        camera = self._fixed_camera(qpos)
        keep = list(range(0, len(qpos), every))
        if keep[-1] != len(qpos) - 1:
            keep.append(len(qpos) - 1)
        image = None
        for k in keep:
            self._set(qpos[k], qvel[k])
            self.renderer.update_scene(self.data, camera=camera)
            rgb = self.renderer.render()
            if image is None:
                image = rgb.copy()
                continue
            self.renderer.enable_segmentation_rendering()
            self.renderer.update_scene(self.data, camera=camera)
            segmentation = self.renderer.render()
            self.renderer.disable_segmentation_rendering()
            mask = np.isin(segmentation[..., 0], self.agent_geoms) & (segmentation[..., 1] == _MJOBJ_GEOM)
            image[mask] = rgb[mask]
        return image

    def close(self) -> None:
        self.renderer.close()


_MJOBJ_GEOM = 5  # mujoco.mjtObj.mjOBJ_GEOM, the object type of geom pixels in segmentation images


def stack_images(images: Sequence[np.ndarray], *, columns: int = 1) -> np.ndarray:
    """Equal-sized (H, W, 3) images in a grid of ``columns`` columns, row by row; blank cells are white."""
    rows = -(-len(images) // columns)
    h, w, c = images[0].shape
    grid = np.full((rows * h, columns * w, c), 255, dtype=np.uint8)
    for k, image in enumerate(images):
        r, col = divmod(k, columns)
        grid[r * h : (r + 1) * h, col * w : (col + 1) * w] = image
    return grid


def save_image(path: str | Path, image: np.ndarray) -> Path:
    """An (H, W, 3) uint8 image as a PNG, written to a temp file then renamed."""
    import imageio.v2 as imageio

    path = Path(path)
    with atomic_path(path) as tmp:
        imageio.imwrite(tmp, np.asarray(image, dtype=np.uint8))
    return path


def save_video(path: str | Path, frames: np.ndarray, fps: int = 30) -> Path:
    """uint8 frames (T, H, W, 3) as an MP4 (H.264 through imageio-ffmpeg), written to a temp file then renamed."""
    import imageio.v2 as imageio

    path = Path(path)
    with atomic_path(path) as tmp:
        imageio.mimwrite(tmp, list(np.asarray(frames, dtype=np.uint8)), fps=fps, macro_block_size=1)
    return path
