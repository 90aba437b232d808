"""D4RL maze2d on the official ``mujoco`` bindings: layouts, the point-mass model, goals and reference scores.

A faithful port of ``d4rl.pointmaze.maze_model.MazeEnv`` (docs/d4rl_and_envs.md §1), D4RL's coordinates: qpos = (row i,
column j) of the layout, the ball's body sits at world (1.2, 1.2) + qpos while wall (i, j) sits at (i + 1, j + 1), so
the free space of cell r is [r − 0.6, r + 0.2] in qpos. The registered envs are built from :data:`MAZE2D_SPECS`.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium
import mujoco
import numpy as np
from gymnasium import spaces

WALL = 10
EMPTY = 11
GOAL = 12

# Rows are separated by a backslash, as in D4RL; parse_maze also accepts newlines.
U_MAZE = "#####\\#GOO#\\###O#\\#OOO#\\#####"
U_MAZE_EVAL = "#####\\#OOG#\\#O###\\#OOO#\\#####"
OPEN = "#######\\#OOOOO#\\#OOGOO#\\#OOOOO#\\#######"
MEDIUM_MAZE = "########\\#OO##OO#\\#OO#OOO#\\##OOO###\\#OO#OOO#\\#O#OO#O#\\#OOO#OG#\\########"
MEDIUM_MAZE_EVAL = "########\\#OOOOOG#\\#O#O##O#\\#OOOO#O#\\###OO###\\#OOOOOO#\\#OO##OO#\\########"
LARGE_MAZE = (
    "############\\#OOOO#OOOOO#\\#O##O#O#O#O#\\#OOOOOO#OOO#\\#O####O###O#\\"
    "#OO#O#OOOOO#\\##O#O#O#O###\\#OO#OOO#OGO#\\############"
)
LARGE_MAZE_EVAL = (
    "############\\#OO#OOO#OGO#\\##O###O#O#O#\\#OO#O#OOOOO#\\#O##O#OO##O#\\"
    "#OOOOOO#OOO#\\#O##O#O#O###\\#OOOO#OOOOO#\\############"
)

VELOCITY_LIMIT = 5.0  # |qvel| is clipped to this before every step
GOAL_RADIUS = 0.5  # sparse reward when ||xy − target|| <= this


def parse_maze(layout: str) -> np.ndarray:
    """Layout string → int grid (rows × columns) of WALL / EMPTY / GOAL."""
    rows = [r for r in layout.strip().replace("\n", "\\").split("\\") if r]
    if not rows or any(len(r) != len(rows[0]) for r in rows):
        raise ValueError(f"maze rows must be non-empty and of equal length: {rows}")
    tiles = {"#": WALL, "G": GOAL, "O": EMPTY, "0": EMPTY, " ": EMPTY}
    grid = np.zeros((len(rows), len(rows[0])), dtype=np.int32)
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            if tile not in tiles:
                raise ValueError(f"unknown tile type {tile!r} in maze row {i}: {row!r}")
            grid[i, j] = tiles[tile]
    return grid


def maze_xml(maze_arr: np.ndarray) -> str:
    """MJCF of the D4RL point maze: ground, the particle with slide joints, a target site and one box per wall."""
    walls = "\n".join(
        f'    <geom name="wall_{i}_{j}" type="box" pos="{i + 1.0} {j + 1.0} 0" size="0.5 0.5 0.2" '
        f'conaffinity="1" material="wall"/>'
        for i, j in zip(*np.nonzero(maze_arr == WALL))
    )
    return f"""<mujoco model="point_maze">
  <compiler inertiafromgeom="true" angle="radian" coordinate="local"/>
  <option timestep="0.01" gravity="0 0 0" iterations="20" integrator="Euler"/>
  <default>
    <joint damping="1" limited="false"/>
    <geom friction=".5 .1 .1" density="1000" margin="0.002" condim="1" contype="2" conaffinity="1"/>
  </default>
  <asset>
    <texture type="2d" name="groundplane" builtin="checker" rgb1="0.2 0.3 0.4" rgb2="0.1 0.2 0.3"
             width="100" height="100"/>
    <texture name="skybox" type="skybox" builtin="gradient" rgb1=".4 .6 .8" rgb2="0 0 0" width="800" height="800"
             mark="random" markrgb="1 1 1"/>
    <material name="groundplane" texture="groundplane" texrepeat="20 20"/>
    <material name="wall" rgba=".7 .5 .3 1"/>
    <material name="target" rgba=".6 .3 .3 1"/>
  </asset>
  <visual>
    <headlight ambient=".4 .4 .4" diffuse=".8 .8 .8" specular="0.1 0.1 0.1"/>
    <map znear=".01"/>
    <quality shadowsize="2048"/>
  </visual>
  <worldbody>
    <geom name="ground" type="plane" size="40 40 0.25" pos="0 0 -0.1" contype="1" conaffinity="0"
          material="groundplane"/>
    <body name="particle" pos="1.2 1.2 0">
      <geom name="particle_geom" type="sphere" size="0.1" rgba="0.0 0.0 1.0 0.0" contype="1"/>
      <site name="particle_site" pos="0 0 0" size="0.2" rgba="0.3 0.6 0.3 1"/>
      <joint name="ball_x" type="slide" pos="0 0 0" axis="1 0 0"/>
      <joint name="ball_y" type="slide" pos="0 0 0" axis="0 1 0"/>
    </body>
    <site name="target_site" pos="0 0 0" size="0.2" material="target"/>
{walls}
  </worldbody>
  <actuator>
    <motor joint="ball_x" ctrlrange="-1.0 1.0" ctrllimited="true" gear="100"/>
    <motor joint="ball_y" ctrlrange="-1.0 1.0" ctrllimited="true" gear="100"/>
  </actuator>
</mujoco>
"""


@dataclass(frozen=True)
class Maze2dSpec:
    """One registered D4RL maze2d env: layout, reward, episode length and reference returns."""

    name: str
    layout: str
    reward_type: str
    max_episode_steps: int
    ref_min_score: float
    ref_max_score: float


def _specs() -> dict[str, Maze2dSpec]:
    """The twelve v1 maze2d ids of D4RL (sparse and dense; training and eval mazes)."""
    rows = [  # (stem, layout, steps, sparse min, sparse max, dense min, dense max)
        ("umaze", U_MAZE, 300, 23.85, 161.86, 68.537689, 193.66285642381482),
        ("medium", MEDIUM_MAZE, 600, 13.13, 277.39, 44.264742, 297.4552547777125),
        ("large", LARGE_MAZE, 800, 6.7, 273.99, 30.569041, 303.4857382709002),
        ("eval-umaze", U_MAZE_EVAL, 300, 36.63, 141.4, 56.95455, 178.21373133248397),
        ("eval-medium", MEDIUM_MAZE_EVAL, 600, 13.07, 204.93, 42.28578, 235.5658957482388),
        ("eval-large", LARGE_MAZE_EVAL, 800, 16.4, 302.22, 56.95455, 326.09647655082637),
    ]
    specs = {}
    for stem, layout, steps, smin, smax, dmin, dmax in rows:
        for name, reward_type, lo, hi in (
            (f"maze2d-{stem}-v1", "sparse", smin, smax),
            (f"maze2d-{stem}-dense-v1", "dense", dmin, dmax),
        ):
            specs[name] = Maze2dSpec(name, layout, reward_type, steps, lo, hi)
    return specs


MAZE2D_SPECS: dict[str, Maze2dSpec] = _specs()


def longest_route(layout: str) -> int:
    """The maze's diameter in cells: the longest, over pairs of free cells, of the shortest path between them
    through free cells (U-Maze 6, Medium 11, Large 19). Multi2D draws start and goal anywhere, so a plan must be
    able to cover it."""
    maze = parse_maze(layout)
    free = {tuple(int(v) for v in cell) for cell in np.argwhere(maze != WALL)}
    longest = 0
    for source in free:
        distance, frontier = {source: 0}, [source]
        while frontier:
            nearer = []
            for i, j in frontier:
                for cell in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
                    if cell in free and cell not in distance:
                        distance[cell] = distance[(i, j)] + 1
                        nearer.append(cell)
            frontier = nearer
        longest = max(longest, max(distance.values()))
    return longest


def check_plan_span(name: str, horizon: int, stride: int) -> None:
    """Refuse a training horizon and stride whose plans cannot reach the maze's goals within an episode.

    A plan of ``horizon`` states every ``stride`` env steps spans (horizon − 1)·stride + 1 env steps, with the goal
    inpainted at its last state. It must be long enough for the maze's longest route at the env's speed limit
    (``longest_route`` cells at VELOCITY_LIMIT · 0.01 s = 0.05 cells per step: 20 steps a cell), or plans to far
    goals jump through walls; and no longer than an episode, or a plan reaches its goal after the episode ends.
    """
    spec = MAZE2D_SPECS.get(name)
    if spec is None:
        return
    span = (horizon - 1) * stride + 1
    cells = longest_route(spec.layout)
    least = int(np.ceil(cells / (VELOCITY_LIMIT * 0.01)))
    where = f"horizon {horizon} at env.stride {stride} spans (horizon − 1)·stride + 1 = {span} env steps"
    if span < least:
        raise ValueError(
            f"{where}, too short for {name}: its longest route ({cells} cells) takes at least {least} env steps at "
            f"the speed limit, so plans to far goals would jump through walls. Raise horizon or env.stride so "
            f"that the span is ≥ {least} (e.g. horizon={-(-(least - 1) // stride) + 1} at env.stride={stride})"
        )
    if span > spec.max_episode_steps:
        raise ValueError(
            f"{where}, longer than an episode of {name} ({spec.max_episode_steps} steps): a plan would reach its "
            f"goal, at its last state, after the episode ends. Lower horizon or env.stride so that the span is ≤ "
            f"{spec.max_episode_steps} (e.g. horizon={(spec.max_episode_steps - 1) // stride + 1} at "
            f"env.stride={stride})"
        )


class Maze2dEnv(gymnasium.Env):
    """D4RL's point-mass maze: obs (x, y, vx, vy) = (qpos, qvel), action = motor forces in [−1, 1]²."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 100}

    def __init__(
        self,
        layout: str,
        reward_type: str = "sparse",
        ref_min_score: float = 0.0,
        ref_max_score: float = 1.0,
        reset_target: bool = False,
        render_mode: str | None = None,
    ):
        if reward_type not in ("sparse", "dense"):
            raise ValueError(f"reward_type must be 'sparse' or 'dense', got {reward_type!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.layout = layout
        self.reward_type = reward_type
        self.ref_min_score = float(ref_min_score)
        self.ref_max_score = float(ref_max_score)
        self.reset_target = reset_target
        self.render_mode = render_mode
        self.maze_arr = parse_maze(layout)

        self.model = mujoco.MjModel.from_xml_string(maze_xml(self.maze_arr))
        self.data = mujoco.MjData(self.model)
        self._target_site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, "target_site")
        self._renderer = None

        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float64)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)

        # D4RL order: empty cells sorted row-major, then the goal cell.
        empty = sorted(zip(*np.nonzero(self.maze_arr == EMPTY)))
        goals = list(zip(*np.nonzero(self.maze_arr == GOAL)))
        if len(goals) > 1:
            raise ValueError("more than one goal cell in the maze layout")
        self.empty_and_goal_locations = np.array(empty + goals, dtype=np.float64).reshape(-1, 2)
        self.target = np.array(goals[0] if goals else empty[0], dtype=np.float64)
        self._set_marker()

    # ---------------------------------------------------------------- D4RL API
    def set_state(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Set qpos and qvel (each of shape (2,)) and recompute derived quantities."""
        self.data.qpos[:] = qpos
        self.data.qvel[:] = qvel
        mujoco.mj_forward(self.model, self.data)

    def set_target(self, target: np.ndarray | None = None) -> None:
        """Set the goal; None draws a random empty/goal cell + U(−0.1, 0.1) per dimension."""
        if target is None:
            idx = self.np_random.choice(len(self.empty_and_goal_locations))
            target = self.empty_and_goal_locations[idx] + self.np_random.uniform(low=-0.1, high=0.1, size=2)
        self.target = np.array(target, dtype=np.float64).reshape(2)
        self._set_marker()

    def get_target(self) -> np.ndarray:
        """The current goal position (qpos coordinates), as in D4RL."""
        return self.target

    def get_normalized_score(self, episode_return: float) -> float:
        """D4RL normalized score as a fraction: (R − ref_min) / (ref_max − ref_min); multiply by 100 to report."""
        return (episode_return - self.ref_min_score) / (self.ref_max_score - self.ref_min_score)

    def reward(self, xy: np.ndarray) -> float:
        """Reward of being at ``xy`` for the current target (sparse: within 0.5; dense: exp(−distance))."""
        dist = float(np.linalg.norm(np.asarray(xy, dtype=np.float64)[:2] - self.target))
        if self.reward_type == "sparse":
            return 1.0 if dist <= GOAL_RADIUS else 0.0
        return float(np.exp(-dist))

    # ------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """Uniform empty/goal cell + U(−0.1, 0.1) position, N(0, 0.1²) velocity; new target if ``reset_target``."""
        super().reset(seed=seed)
        idx = self.np_random.choice(len(self.empty_and_goal_locations))
        qpos = self.empty_and_goal_locations[idx] + self.np_random.uniform(low=-0.1, high=0.1, size=2)
        qvel = self.np_random.standard_normal(2) * 0.1
        mujoco.mj_resetData(self.model, self.data)
        self.set_state(qpos, qvel)
        if self.reset_target:
            self.set_target()
        return self._get_obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Clip action, clip qvel to ±5 and set it, one mj_step; never terminates (the TimeLimit truncates)."""
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        self.set_state(self.data.qpos.copy(), np.clip(self.data.qvel, -VELOCITY_LIMIT, VELOCITY_LIMIT))
        self.data.ctrl[:] = action
        mujoco.mj_step(self.model, self.data)
        obs = self._get_obs()
        return obs, self.reward(obs), False, False, {}

    def render(self) -> np.ndarray | None:
        """Top-down RGB frame (needs an OpenGL backend, e.g. MUJOCO_GL=egl); None without render_mode."""
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, height=480, width=480)
            self._camera = mujoco.MjvCamera()
            rows, cols = self.maze_arr.shape
            self._camera.lookat[:] = (rows / 2.0 + 0.5, cols / 2.0 + 0.5, 0.0)
            self._camera.distance = 1.4 * max(rows, cols)
            self._camera.elevation = -90.0
            self._camera.azimuth = 180.0  # image down = +row, image right = +column, as the layout reads
        mujoco.mj_forward(self.model, self.data)  # current positions (mj_step leaves the pre-step kinematics)
        self._set_marker()
        self._renderer.update_scene(self.data, camera=self._camera)
        return self._renderer.render()

    def close(self) -> None:
        """Release the renderer, if one was made."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # ----------------------------------------------------------------- helpers
    def _get_obs(self) -> np.ndarray:
        """(x, y, vx, vy) = concatenated qpos and qvel."""
        return np.concatenate([self.data.qpos, self.data.qvel]).astype(np.float64)

    def _set_marker(self) -> None:
        """Place the target site at target + 1 in world coordinates, as D4RL's ``set_marker`` does."""
        self.data.site_xpos[self._target_site] = (self.target[0] + 1.0, self.target[1] + 1.0, 0.0)
