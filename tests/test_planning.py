import gymnasium
import numpy as np
import pytest
import torch

import diffuser.envs  # noqa: F401
from diffuser.datasets.normalization import make_normalizer
from diffuser.diffusion.gaussian import GaussianDiffusion
from diffuser.models import TemporalUnet
from diffuser.planning.maze2d import Maze2dPlanner, Plan, track_waypoint
from diffuser.planning.rollout import run_maze2d_episodes


def test_tracking_rule_by_hand():
    plan = np.array([[0, 0, 0, 0], [1.0, 2.0, 0.5, -0.5], [3.0, 3.0, 1.0, 1.0]])
    state = np.array([0.5, 1.0, 0.2, 0.1])
    np.testing.assert_allclose(track_waypoint(plan, 0, state), [0.5 + 0.3, 1.0 - 0.6])
    # Past the plan's end: the last planned position, at rest.
    np.testing.assert_allclose(track_waypoint(plan, 2, state), [2.5 - 0.2, 2.0 - 0.1])


def make_planner(horizon=16):
    normalizer = make_normalizer("limits", 6).fit(np.array([[-1, -1, 0, 0, -5, -5], [1, 1, 4, 4, 5, 5]]))
    torch.manual_seed(0)
    net = TemporalUnet(horizon=horizon, transition_dim=6, dim=8, dim_mults=(1, 2))
    diffusion = GaussianDiffusion(net, normalizer, horizon=horizon, observation_dim=4, action_dim=2,
                                  n_diffusion_steps=4, clip_denoised=True)
    return Maze2dPlanner(diffusion)


def test_plans_start_at_the_state_and_end_at_the_goal():
    planner = make_planner()
    starts = np.array([[1.0, 1.0, 0.1, -0.2], [3.0, 2.0, 0.0, 0.3]])
    goals = np.array([[3.0, 3.0], [1.0, 1.0]])
    plan = planner.plan(starts, goals, torch.Generator().manual_seed(0))
    assert plan.observations.shape == (2, 16, 4) and plan.actions.shape == (2, 16, 2)
    np.testing.assert_allclose(plan.observations[:, 0], starts, atol=1e-5)
    np.testing.assert_allclose(plan.observations[:, -1, :2], goals, atol=1e-5)
    np.testing.assert_allclose(plan.observations[:, -1, 2:], 0, atol=1e-5)


class StraightLinePlanner(Maze2dPlanner):
    """Plans a straight line to the goal: in the open part of U-Maze's top corridor tracking it must score."""

    def plan(self, observations, goals, generator=None):
        alphas = np.linspace(0, 1, self.horizon)[None, :, None]
        xy = observations[:, None, :2] * (1 - alphas) + goals[:, None, :] * alphas
        velocity = np.gradient(xy, axis=1) / 0.01  # dt of the point mass
        return Plan(np.zeros((len(goals), self.horizon, 2)), np.concatenate([xy, velocity], -1))


class CorridorStart(gymnasium.Wrapper):
    """Starts every episode at rest in U-Maze's top corridor, two cells right of the goal (1, 1)."""

    def reset(self, *, seed=None, options=None):
        _, info = self.env.reset(seed=seed, options=options)
        self.env.unwrapped.set_state(np.array([1.0, 3.0]), np.zeros(2))
        return np.array([1.0, 3.0, 0.0, 0.0]), info


def test_episode_runner_scores_a_competent_plan_and_runs_episodes_together():
    envs = [CorridorStart(gymnasium.make("maze2d-umaze-v1")) for _ in range(3)]
    planner = StraightLinePlanner(make_planner().diffusion, horizon=80)
    results = run_maze2d_episodes(envs, planner, seed=10)
    assert results.seeds == [10, 11, 12] and results.lengths.tolist() == [300] * 3
    assert (results.returns > 220).all()  # within 0.5 of the goal after ~60 of the 80 planned steps, then stays
    assert results.normalized_scores == pytest.approx(100 * (results.returns - 23.85) / (161.86 - 23.85))
    summary = results.summary()
    assert summary["n_episodes"] == 3 and summary["normalized_score_se"] >= 0
