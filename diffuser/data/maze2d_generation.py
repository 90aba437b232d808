"""Generate a D4RL maze2d dataset with the waypoint controller (docs/d4rl_and_envs.md §1.6) as a D4RL-layout HDF5 file.

One continuous trajectory: the controller drives to a random target, and when it reaches the target cell (or after
``max_episode_steps``) a new random target is drawn, without resetting the env. As in D4RL's script the observation
is not updated on a goal switch, so the row after a switch repeats the previous observation while ``infos/qpos`` and
``infos/qvel`` hold the true state. ``timeouts`` marks the goal switches (as the released v1 files do), ``terminals``
is all False, and rewards are relabelled with the env's fixed goal and the row's own observation.

Library code: ``train.py`` calls :func:`generate_maze2d` when a Maze2D dataset is missing. The command line is
``python -m diffuser.tools.maze2d_generate --env maze2d-umaze-v1 --num-samples 1000000 --seed 0``.
"""

from __future__ import annotations

import time
from array import array
from pathlib import Path

import mujoco
import numpy as np

from diffuser.data.d4rl import default_dataset_dir, file_names, write_d4rl
from diffuser.data.preprocess import relabel_rewards
from diffuser.envs.maze2d import MAZE2D_SPECS, Maze2dEnv, VELOCITY_LIMIT
from diffuser.envs.waypoint_controller import WaypointController

ACTION_NOISE = 0.5  # std of the Gaussian added to the controller's action when noisy
NOISE_BLOCK = 1 << 16  # noise is drawn this many steps at a time


def default_output_path(env_name: str) -> Path:
    """Where the reader looks for ``env_name`` first, e.g. ``~/.d4rl/datasets/maze2d-umaze-sparse-v1.hdf5``."""
    return default_dataset_dir() / file_names(env_name)[0]


def rollout(
    env: Maze2dEnv,
    controller: WaypointController,
    noise_rng: np.random.Generator,
    num_samples: int,
    max_episode_steps: int,
    noisy: bool = True,
) -> dict[str, np.ndarray]:
    """Run D4RL's generation loop on the raw MjModel/MjData; returns float64 arrays and the done flags.

    Each step reproduces ``Maze2dEnv.step`` exactly (clip the action, clip qvel to ±5 before stepping, one mj_step);
    the env's own ``set_target()`` draws the new targets.
    """
    model, data = env.model, env.data
    qpos, qvel, ctrl = data.qpos, data.qvel, data.ctrl
    act, step = controller.act, mujoco.mj_step
    vmax = VELOCITY_LIMIT

    env.set_target()
    obs, _ = env.reset()
    x, y, vx, vy = obs.tolist()  # true state before the step
    sx, sy, svx, svy = x, y, vx, vy  # observation the controller sees (stale for one row after a switch)
    tx, ty = env.target.tolist()

    states, observations, actions, goals = array("d"), array("d"), array("d"), array("d")
    dones = bytearray(num_samples)
    noise: list[list[float]] = []
    ts = 0
    for t in range(num_samples):
        k = t % NOISE_BLOCK
        if noisy and k == 0:
            noise = (noise_rng.standard_normal((min(NOISE_BLOCK, num_samples - t), 2)) * ACTION_NOISE).tolist()
        ax, ay, done = act(sx, sy, svx, svy, tx, ty)
        if noisy:
            nx, ny = noise[k]
            ax += nx
            ay += ny
        ax = -1.0 if ax < -1.0 else (1.0 if ax > 1.0 else ax)
        ay = -1.0 if ay < -1.0 else (1.0 if ay > 1.0 else ay)
        if ts >= max_episode_steps:
            done = True
        observations.extend((sx, sy, svx, svy))
        states.extend((x, y, vx, vy))
        actions.extend((ax, ay))
        goals.extend((tx, ty))
        if done:
            dones[t] = 1

        # Maze2dEnv.step: velocity clip written back before simulating, then one mj_step.
        if vx > vmax or vx < -vmax or vy > vmax or vy < -vmax:
            qvel[0] = min(max(vx, -vmax), vmax)
            qvel[1] = min(max(vy, -vmax), vmax)
        ctrl[0] = ax
        ctrl[1] = ay
        step(model, data)
        x, y = qpos.tolist()
        vx, vy = qvel.tolist()

        ts += 1
        if done:
            env.set_target()
            tx, ty = env.target.tolist()
            ts = 0
        else:
            sx, sy, svx, svy = x, y, vx, vy

    states_np = np.frombuffer(states, dtype=np.float64).reshape(-1, 4)
    return {
        "observations": np.frombuffer(observations, dtype=np.float64).reshape(-1, 4),
        "actions": np.frombuffer(actions, dtype=np.float64).reshape(-1, 2),
        "goals": np.frombuffer(goals, dtype=np.float64).reshape(-1, 2),
        "qpos": states_np[:, :2],
        "qvel": states_np[:, 2:],
        "dones": np.frombuffer(bytes(dones), dtype=np.uint8).astype(bool),
    }


def generate_maze2d(
    env_name: str,
    num_samples: int,
    seed: int = 0,
    noisy: bool = True,
    path: str | Path | None = None,
) -> Path:
    """Generate ``num_samples`` steps for a maze2d env name and write them as a D4RL-layout file; returns its path."""
    if env_name not in MAZE2D_SPECS:
        raise ValueError(f"unknown maze2d env {env_name!r}; known names: {', '.join(sorted(MAZE2D_SPECS))}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    spec = MAZE2D_SPECS[env_name]
    path = Path(path) if path is not None else default_output_path(env_name)

    env = Maze2dEnv(spec.layout, spec.reward_type, spec.ref_min_score, spec.ref_max_score)
    eval_goal = env.target.copy()  # the registered env's fixed 'G' target, used to relabel rewards
    env_seed, controller_seed, noise_seed = np.random.SeedSequence(seed).spawn(3)
    env.np_random = np.random.default_rng(env_seed)
    controller = WaypointController(spec.layout, rng=np.random.default_rng(controller_seed))
    noise_rng = np.random.default_rng(noise_seed)

    start = time.perf_counter()
    out = rollout(env, controller, noise_rng, num_samples, spec.max_episode_steps, noisy)
    observations = out["observations"].astype(np.float32)
    arrays = {
        "observations": observations,
        "actions": out["actions"].astype(np.float32),
        "rewards": relabel_rewards(observations, eval_goal, spec.reward_type),
        "terminals": np.zeros(num_samples, dtype=bool),
        "timeouts": out["dones"],
        "infos/goal": out["goals"].astype(np.float32),
        "infos/qpos": out["qpos"].astype(np.float32),
        "infos/qvel": out["qvel"].astype(np.float32),
    }
    attrs = {
        "env_name": env_name,
        "seed": int(seed),
        "num_samples": int(num_samples),
        "noisy": bool(noisy),
        "generator": "diffuser.tools.maze2d_generate",  # the command that makes such a file
    }
    write_d4rl(path, arrays, attrs)
    seconds = time.perf_counter() - start
    print(
        f"maze2d_generate: {env_name} {num_samples} steps, {int(out['dones'].sum())} goal switches, "
        f"{seconds:.1f} s -> {path}"
    )
    return path
