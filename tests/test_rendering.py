"""Renderers: locomotion observations as MuJoCo frames (root x rebuilt), composites, MP4s; Maze2D episode videos."""

import imageio.v2 as imageio
import numpy as np
import pytest

from diffuser.envs.locomotion import make_locomotion_env
from diffuser.utils.rendering import (
    LocomotionRenderer,
    maze2d_video_frames,
    save_video,
    stack_images,
)


def rollout(name: str, steps: int, seed: int = 0):
    """Observations (T + 1, obs_dim) and the true root x (T + 1,) of a random-action episode."""
    env = make_locomotion_env(name).unwrapped
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    observations, xs = [obs], [env.data.qpos[0]]
    for _ in range(steps):
        obs, *_ = env.step(env.action_space.sample())
        observations.append(obs)
        xs.append(env.data.qpos[0])
    return np.stack(observations), np.array(xs)


@pytest.mark.parametrize("name", ["hopper-medium-v2", "walker2d-medium-v2", "halfcheetah-medium-v2"])
def test_states_rebuild_the_root_x_as_the_original(name):
    observations, true_x = rollout(name, 60)
    renderer = LocomotionRenderer.for_env(name, width=64, height=48)
    qpos, qvel = renderer.states(observations)
    nq = renderer.model.nq
    np.testing.assert_array_equal(qpos[:, 1:], observations[:, : nq - 1])
    np.testing.assert_array_equal(qvel, observations[:, nq - 1 :])
    np.testing.assert_allclose(qpos[:, 0], np.cumsum(observations[:, nq - 1]) * renderer.dt)
    # The original's estimate follows the true position: end-of-step velocities, so off by at most a few steps' travel.
    moved = true_x - true_x[0]
    assert np.abs(qpos[:, 0] - moved).max() < 0.05 + 0.1 * np.abs(moved).max()
    with pytest.raises(ValueError, match=r"expected \(T, " + str(observations.shape[1]) + r"\)"):
        renderer.states(observations[:, :-1])


def test_frames_match_the_env_render_at_the_same_state():
    observations, _ = rollout("hopper-medium-v2", 10)
    renderer = LocomotionRenderer.for_env("hopper-medium-v2", width=96, height=72)
    frames = renderer.frames(observations)
    assert frames.shape == (11, 72, 96, 3) and frames.dtype == np.uint8
    qpos, qvel = renderer.states(observations)
    env = make_locomotion_env("hopper-medium-v2", render_mode="rgb_array", width=96, height=72).unwrapped
    env.reset(seed=0)
    for k in (0, 10):
        env.set_state(qpos[k], qvel[k])
        np.testing.assert_array_equal(frames[k], env.render())
    assert not np.array_equal(frames[0], frames[10])  # the pose changed
    fixed = renderer.frames(observations, camera="fixed")
    assert fixed.shape == frames.shape and not np.array_equal(fixed[0], frames[0])


def test_composite_overlays_the_agent_of_every_kept_state():
    renderer = LocomotionRenderer.for_env("hopper-medium-v2", width=160, height=90)
    # Two standing poses 1.5 m apart (x velocity 1.5 / dt on the second row), drawn in one side view.
    observations = np.zeros((2, 11))
    observations[:, 0] = 1.25  # root height of the standing hopper
    observations[1, 5] = 1.5 / renderer.dt
    first, second = renderer.frames(observations, camera="fixed")  # the composite's view, one pose each
    composite = renderer.composite(observations)
    # The first frame is the background; the second pose's pixels are pasted on it (its shadow is not).
    changed = np.any(composite != first, axis=-1)
    np.testing.assert_array_equal(composite[changed], second[changed])
    right = np.zeros_like(changed)
    right[:, 80:] = True  # the second pose stands right of the centre, the first left of it
    differs = np.any(second != first, axis=-1)
    assert changed.sum() > 100 and not (changed & ~right).any()
    assert changed.sum() > 0.5 * (differs & right).sum()
    # One state: the composite is that state's frame.
    np.testing.assert_array_equal(renderer.composite(observations[:1]), renderer.frames(observations[:1], camera="fixed")[0])


def test_stack_images_and_video_roundtrip(tmp_path):
    images = [np.full((4, 6, 3), k * 40, dtype=np.uint8) for k in range(3)]
    grid = stack_images(images, columns=2)
    assert grid.shape == (8, 12, 3)
    assert (grid[:4, 6:] == 40).all() and (grid[4:, 6:] == 255).all()  # row by row; the blank cell is white
    frames = np.random.default_rng(0).integers(0, 255, size=(5, 32, 48, 3), dtype=np.uint8)
    path = save_video(tmp_path / "media" / "v.mp4", frames, fps=10)
    assert path.is_file() and not list(path.parent.glob(".*tmp*"))
    assert np.asarray(imageio.mimread(path)).shape == (5, 32, 48, 3)


def test_maze2d_episode_video_frames():
    from diffuser.envs.maze2d import MAZE2D_SPECS, parse_maze

    maze = parse_maze(MAZE2D_SPECS["maze2d-umaze-v1"].layout)
    plan = np.stack([np.linspace(1, 3, 20), np.full(20, 1.0)], axis=1)
    executed = np.stack([np.linspace(1, 3, 10), np.full(10, 1.0)], axis=1)
    frames = maze2d_video_frames(maze, plan, executed, np.array([3.0, 1.0]), every=4)
    assert frames.shape[0] == 4 and frames.dtype == np.uint8  # steps 1, 5, 9 and the last
    assert not np.array_equal(frames[0], frames[-1])
